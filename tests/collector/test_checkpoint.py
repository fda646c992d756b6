"""Checkpointer: a bulk load's WAL copied back into the database beside the writer."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection

from recommender.collector.checkpoint import Checkpointer
from recommender.collector.events import Event
from recommender.collector.writer import EventWriter
from recommender.store import Store

from .test_writer import NOW, T0, h

D1 = "sha256:" + "1" * 64


def pulls(n: int, first: int = 0) -> list[Event]:
    return [Event(time=T0 + h(i / 100), source="distribution", source_event_id=f"e{i}",
                  action="pull", usage="use", repository="shop/api", digest=D1)
            for i in range(first, first + n)]


def events_in_file(db: Path, tmp_path: Path) -> int:
    """The events the database file holds by itself: a copy of it without its WAL (0 while
    the table is only in the WAL, or for a copy taken halfway through a checkpoint)."""
    copy = tmp_path / "alone.db"
    shutil.copyfile(db, copy)
    con = sqlite3.connect(copy)
    try:
        return int(con.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.DatabaseError:  # no table yet, or a torn copy
        return 0
    finally:
        con.close()


def test_each_commit_is_copied_back_while_the_writer_goes_on(sqlite_store: Store,
                                                              tmp_path: Path) -> None:
    db = Path(sqlite_store.engine.url.database or "")
    with Checkpointer(sqlite_store) as checkpointer:
        writer = EventWriter(sqlite_store, bulk=True, checkpointer=checkpointer)
        assert writer.write(pulls(500), now=NOW).stored == 500
        # Far below the writer's own checkpoint (40,000 pages): only the thread copies it.
        deadline = time.monotonic() + 10
        while (copied := events_in_file(db, tmp_path)) < 500 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert copied == 500
        assert checkpointer.passes >= 1
        with sqlite_store.connect() as conn:  # the writer's pooled connection
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 40000
        writer.write(pulls(300, first=500), now=NOW)
    # close() copies what was committed before it.
    assert events_in_file(db, tmp_path) == 800
    assert checkpointer.failure is None


def test_without_a_checkpointer_the_writer_checkpoints_as_before(sqlite_store: Store,
                                                                 tmp_path: Path) -> None:
    EventWriter(sqlite_store, bulk=True).write(pulls(500), now=NOW)
    with sqlite_store.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 10000
    assert events_in_file(Path(sqlite_store.engine.url.database or ""), tmp_path) < 500


def test_close_copies_what_was_committed_before_it(sqlite_store: Store, tmp_path: Path) -> None:
    EventWriter(sqlite_store, bulk=True).write(pulls(500), now=NOW)  # never told of it
    db = Path(sqlite_store.engine.url.database or "")
    assert events_in_file(db, tmp_path) < 500
    Checkpointer(sqlite_store).close()
    assert events_in_file(db, tmp_path) == 500


class _Unreachable(Store):
    """The store, but the checkpointer's own connection cannot be had."""

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        raise sqlite3.OperationalError("unable to open database file")
        yield  # pragma: no cover


def test_a_failed_checkpointer_stops_and_the_writer_goes_on(sqlite_store: Store) -> None:
    checkpointer = Checkpointer(_Unreachable(sqlite_store.engine))
    writer = EventWriter(sqlite_store, bulk=True, checkpointer=checkpointer)
    assert writer.write(pulls(10), now=NOW).stored == 10  # told after the thread ended
    checkpointer.close()
    checkpointer.close()  # idempotent
    assert isinstance(checkpointer.failure, sqlite3.OperationalError)
    assert checkpointer.passes == 0


def test_checkpoints_are_for_sqlite_only() -> None:
    with pytest.raises(ValueError, match="SQLite's, not postgresql's"):
        Checkpointer(Store.from_url("postgresql://nobody@127.0.0.1:1/none"))
