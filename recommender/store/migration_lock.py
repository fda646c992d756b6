"""One migration at a time: replicas and Jobs that run ``tagwarden migrate`` together wait for
each other instead of failing on a half-created schema.

PostgreSQL: a session advisory lock on a connection of its own, held for the whole Alembic
upgrade (which runs on another connection); a migrator that dies drops its connection and with
it the lock. SQLite: an exclusive ``flock`` on a file beside the database (``<file>.migrate-lock``);
not SQLite's own lock, which the migrating connection of the same process would then wait on.
Alembic reads the schema's version after the lock is taken, so whoever waited finds the work
done and does nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

__all__ = ["ADVISORY_KEY", "migration_lock"]

log = logging.getLogger(__name__)

# A bigint derived from the lock's name, in the style of the collector's per-repository keys.
ADVISORY_KEY = int.from_bytes(hashlib.blake2b(b"tagwarden:migrate", digest_size=8).digest(),
                              "big", signed=True)


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Hold the store's migration lock (waiting for it as long as another migrator holds it)."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine):
            yield
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with _file_lock(Path(f"{engine.url.database}.migrate-lock")):
            yield
    else:  # an in-memory database lives in one process: nothing to race with
        yield


@contextmanager
def _advisory_lock(engine: Engine) -> Iterator[None]:
    with engine.connect() as conn:
        taken = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY})
        if not taken.scalar():
            log.info("another process is migrating the store; waiting for it")
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_KEY})
        conn.commit()  # the lock is the session's; no transaction stays open around it
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
            conn.commit()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # no such directory, read-only: the migration itself reports it
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is migrating the store; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock
