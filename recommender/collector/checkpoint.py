"""WAL checkpoints beside a SQLite bulk load, on a thread and a connection of their own.

In WAL mode a commit appends the pages it changed to the ``-wal`` file; a *checkpoint* copies
them back into the database and, under ``synchronous=NORMAL``, fsyncs the WAL and the database.
SQLite runs it in the committing connection once the WAL passes ``wal_autocheckpoint`` pages,
so the file ingest's writing thread did every copy and waited for every fsync itself (a
system-call trace of a large ingest is in bench/).

:class:`Checkpointer` runs ``PRAGMA wal_checkpoint(PASSIVE)`` after the commits it is told of,
from its own connection. A passive checkpoint takes no lock a writer needs, so the writer goes
on meanwhile (SQLite and the ``sqlite3`` module release the GIL for it). The writer keeps a
higher ``wal_autocheckpoint`` as the bound on the WAL: the WAL only starts over from its
beginning when a write transaction begins with every frame copied back, which this thread
alone never ensures (the writer commits again while it copies). When the writer's own
checkpoint comes, this thread has copied all but the newest frames, so it copies little, and
the next transaction starts the WAL over.

Nothing depends on this thread for correctness: a checkpoint copies committed pages only, and
a failure (kept in :attr:`Checkpointer.failure`) stops the thread while the writer's own
checkpoints carry on alone, as without it.
"""

from __future__ import annotations

import threading

from ..store import Store

__all__ = ["Checkpointer"]


class Checkpointer:
    """Checkpoints ``store``'s WAL (SQLite) on a thread, after the commits it is told of.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, store: Store) -> None:
        if store.dialect != "sqlite":
            raise ValueError(f"WAL checkpoints are SQLite's, not {store.dialect}'s")
        self.store = store
        self.passes = 0  # checkpoints run
        self.failure: BaseException | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tagwarden-checkpoint",
                                        daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A transaction was committed: checkpoint once the thread is free (several commits
        told while it works are covered by one pass)."""
        self._wake.set()

    def close(self) -> None:
        """Checkpoint what was committed so far, then stop the thread (idempotent)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        try:
            with self.store.connect() as conn:
                while True:
                    self._wake.wait()
                    self._wake.clear()
                    # Read before the pass, so the last pass covers every commit told
                    # before close().
                    stopping = self._stopping
                    # (busy, WAL frames, frames copied): busy only while another checkpoint
                    # runs (the writer's own), which then copies the frames itself.
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
                    conn.rollback()  # ends SQLAlchemy's transaction; the driver began none
                    self.passes += 1
                    if stopping:
                        return
        except BaseException as exc:  # noqa: BLE001 - kept for the caller; the writer goes on
            self.failure = exc
