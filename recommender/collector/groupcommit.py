"""Group commit for bulk loads: several batches per transaction, written on a background thread.

``tagwarden ingest`` hands batches of 10,000 events to a :class:`GroupCommitWriter`, which
writes them in order on one thread (SQLite and psycopg release the GIL while the database works,
so the caller reads the next batch meanwhile) and commits once a transaction holds
``max_events`` events or is ``max_seconds`` old. Why group: every commit rewrites each page the
transaction dirtied into SQLite's WAL, and the events' unique key lands all over its index, so
per-batch commits rewrote nearly the whole index every 10,000 events (bench/ has the
figures). A transaction's rollups and distinct clients are merged in memory and upserted once,
before it commits (a popular manifest's counters once, not once per batch). Memory does not
grow: a batch is handed over only once the previous one is written (the caller reads the next
meanwhile), the merged rollups and clients are bounded by the group's size, and the open
transaction's pages live in SQLite's capped page cache.

What a caller can rely on:

- a transaction also commits when no next batch arrives within ``idle`` seconds, so a slow
  producer (stdin) never holds SQLite's write lock while it waits, and at :meth:`close`;
- ``on_commit`` is told each committed transaction's result, and only then: a batch is counted
  when it is durable;
- a failure rolls the open transaction back (none of its batches is counted, a re-run stores
  them without duplicates), nothing after it is written, and it is raised by the next
  :meth:`submit` or by :meth:`close`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from .events import Event, WriteResult
from .prepared import Deferred, PreparedBatch
from .writer import EventWriter

__all__ = ["GroupCommitWriter"]

_STOP = object()
_FLUSH = object()


class GroupCommitWriter:
    """Writes submitted batches through ``writer``, committing them in groups (module doc)."""

    def __init__(
        self,
        writer: EventWriter,
        *,
        on_commit: Callable[[WriteResult], None],
        max_events: int = 50_000,
        max_seconds: float = 2.0,
        idle: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.max_events = max_events
        self.max_seconds = max_seconds
        self.idle = idle
        self._on_commit = on_commit
        self._clock = clock
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._failure: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tagwarden-ingest", daemon=True)
        self._thread.start()

    def submit(self, batch: PreparedBatch | Sequence[Event], *, now: datetime) -> None:
        """Hand ``batch`` (received at ``now``) to the writing thread once it has written the
        previous one: with the one the caller reads meanwhile, at most two batches are in
        this process. Raises the writer's failure, if any (nothing is written after it)."""
        self._raise()
        self._queue.join()
        self._raise()
        self._queue.put((batch, now))

    def flush(self) -> None:
        """Commit what was submitted so far, once written, without waiting for the group to
        fill, and return at once. A caller that knows its input is nearly done (the file
        ingest's last batches) so has that commit overlap its own work instead of ending
        the run with it. Raises the writer's failure, if any."""
        self._raise()
        self._queue.join()
        self._raise()
        self._queue.put(_FLUSH)

    def close(self) -> None:
        """Write and commit what was submitted, stop the thread, raise a failure if any."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()
        self._raise()

    def __enter__(self) -> GroupCommitWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raise(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _write(self, item: tuple[Any, datetime], conn: Connection,
               deferred: Deferred) -> WriteResult:
        batch, now = item
        if isinstance(batch, PreparedBatch):
            return self.writer.write_prepared(batch, conn=conn, deferred=deferred)
        return self.writer.write(batch, now=now, conn=conn, deferred=deferred)

    def _run(self) -> None:
        item: Any = None
        taken = False  # ``item`` came off the queue and is not marked done yet (submit waits)
        try:
            item = self._queue.get()
            taken = item is not _STOP
            while item is not _STOP:
                if item is _FLUSH:  # nothing written since the last commit
                    self._queue.task_done()
                    taken = False
                    item = self._queue.get()
                    taken = item is not _STOP
                    continue
                held = WriteResult()
                deferred = Deferred()  # rollups and clients: written once, before the commit
                started = self._clock()
                with self.writer.transaction() as conn:
                    while True:
                        try:
                            held += self._write(item, conn, deferred)
                        finally:
                            self._queue.task_done()
                            taken = False
                        if (held.received >= self.max_events
                                or self._clock() - started >= self.max_seconds):
                            item = None
                            break
                        try:
                            item = self._queue.get(timeout=self.idle)
                        except queue.Empty:
                            item = None  # the producer is slow: do not hold the lock
                            break
                        taken = item is not _STOP
                        if item is _STOP:
                            break
                        if item is _FLUSH:
                            self._queue.task_done()  # the caller goes on while this commits
                            taken = False
                            item = None
                            break
                    self.writer.write_deferred(conn, deferred)
                self._on_commit(held)
                if item is None:
                    item = self._queue.get()
                    taken = item is not _STOP
        except BaseException as exc:  # handed to the caller's thread, raised there
            self._failure = exc
            if taken:  # e.g. the transaction could not begin: release the waiting submit
                self._queue.task_done()
            while item is not _STOP:  # unblock submit until close; write nothing more
                item = self._queue.get()
                self._queue.task_done()
