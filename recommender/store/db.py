"""Opening the store: one engine per URL, SQLite tuned for concurrent use, Alembic upgrades."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, func, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.sql.dml import Insert

from .. import fencing
from ..errors import StoreError
from .failures import classify, first_line
from .migration_lock import migration_lock

__all__ = ["Store", "bound_idle", "dialect_insert", "migrate", "open_store"]

_MIGRATIONS = Path(__file__).with_name("migrations")


def dialect_insert(conn: Connection | Engine, table: Table) -> Insert:
    """An INSERT that supports ``on_conflict_do_nothing/update`` on SQLite and PostgreSQL."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise StoreError(f"unsupported database {name!r} (use SQLite or PostgreSQL)", dialect=name)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; busy_timeout waits instead of failing
    # with "database is locked" when two processes write; NORMAL is durable in WAL mode
    # except for the last transactions on power loss.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def application_name() -> str:
    """How this process names itself to PostgreSQL (``pg_stat_activity.application_name``):
    which replica (a pod's hostname) and which process holds a connection or a lock."""
    return f"tagwarden-{socket.gethostname()}-{os.getpid()}"[:63]  # NAMEDATALEN - 1


# libpq's keepalive and timeout options (seconds; tcp_user_timeout in milliseconds).
TCP_OPTIONS: dict[str, int] = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
                               "keepalives_interval": 5, "keepalives_count": 3,
                               "tcp_user_timeout": 30_000}


def _name_connection(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
    # At connect time, so a forked worker names its own pid. An application_name in the URL
    # (``?application_name=...``) or in PGAPPNAME wins.
    if "PGAPPNAME" not in os.environ:
        cparams.setdefault("application_name", application_name())
    # A database cut off without its TCP connection closing must fail a call within about
    # half a minute, not after the kernel's hours: a replica waits on it (the scheduler's lease
    # renewal, a job's writes) and can only recover once it fails. A value in the URL wins.
    for option, value in TCP_OPTIONS.items():
        cparams.setdefault(option, value)


def _make_engine(url: str) -> Engine:
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
        if engine.dialect.name == "postgresql":
            event.listen(engine, "do_connect", _name_connection)
        return engine
    except (ArgumentError, ImportError, ValueError) as exc:
        raise StoreError(f"cannot open store {url!r}: {exc}", url=url) from exc


def bound_idle(conn: Connection, limit: timedelta) -> None:
    """On PostgreSQL, end this session should the current transaction sit idle ``limit``: a
    process frozen or cut off inside it would otherwise keep its row locks, and everyone
    waiting on them, until TCP gives up."""
    if conn.dialect.name == "postgresql":
        milliseconds = max(int(limit.total_seconds() * 1000), 1)
        conn.execute(select(func.set_config("idle_in_transaction_session_timeout",
                                            str(milliseconds), True)))


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent). Concurrent migrators take turns
    (:func:`migration_lock`): the second finds the schema upgraded and does nothing."""
    from alembic import command

    try:
        with migration_lock(engine):
            command.upgrade(_alembic_config(engine), revision)
    except DBAPIError as exc:
        # Unreachable, refused, or not a database at all (SQLite's "file is not a database").
        raise StoreError(f"cannot open the store {_redact(engine)}: {first_line(exc)}",
                         url=_redact(engine), kind=classify(exc)[0]) from exc


def _redact(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


class Store:
    """The store: an engine plus the knowledge of its dialect. Nothing connects until used."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(_make_engine(url))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def url(self) -> str:
        return _redact(self.engine)

    def migrate(self) -> Store:
        migrate(self.engine)
        return self

    def check_schema(self) -> None:
        """Raise :class:`StoreError` unless the schema is at the newest migration."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(_alembic_config(self.engine)).get_current_head()
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except DBAPIError as exc:
            raise StoreError(f"cannot open the store {self.url}: {first_line(exc)}",
                             url=self.url, kind=classify(exc)[0]) from exc
        if current != head:
            raise StoreError(
                f"store schema is at {current or 'nothing'}, code expects {head}: "
                "run `tagwarden migrate`",
                current=current,
                head=head,
            )

    def table_names(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())

    @contextmanager
    def begin(self, *, idle: timedelta | None = None) -> Iterator[Connection]:
        """A write transaction, committed at the end of the block. ``idle`` (by default the
        bound of a scheduled job's fence, else none) ends the session on PostgreSQL when the
        transaction sits idle that long. Under a job's fence (:mod:`recommender.fencing`) it
        commits only if the job's lease still holds."""
        with self.engine.begin() as conn:
            limit = idle if idle is not None else fencing.idle_limit()
            if limit is not None:
                bound_idle(conn, limit)
            yield conn
            fencing.check(conn)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, migrate_schema: bool = True) -> Store:
    store = Store.from_url(url)
    if migrate_schema:
        store.migrate()
    return store
