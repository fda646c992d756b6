"""The store: schema, engine, migrations. SQLite by default, PostgreSQL for several replicas."""

from . import tables
from .db import Store, bound_idle, dialect_insert, migrate, open_store

__all__ = ["Store", "bound_idle", "dialect_insert", "migrate", "open_store", "tables"]
