"""The event writer in a child process: the collector's writes off its event loop's GIL.

In one process the event loop (HTTP, parsing) and the writer thread take turns on one GIL, so
a collector never uses much more than one core, however many it has. :class:`ProcessWriter`
has the same ``write``/``write_snapshot`` interface as ``EventWriter`` and runs one in a
child process (``spawn``: forking a process that has threads is unsafe), which opens its own
connection to the same store. The batcher still calls it from its one writer thread, which
now only waits for the child (without the GIL), so batches, group commit and "a 2xx only once
committed" are unchanged.

On SQLite the batch is planned here, with I1's ``prepare`` (what ``EventWriter.write`` does
first), and the child only runs ``write_prepared``: the child is the busier of the two (in the
benchmark ~32 us per event against ~21 here), and planning is ~4.4 us of its share. On
PostgreSQL events cross as plain tuples (pickling slotted dataclasses calls Python code per
object).

The child's failures cross as data: a pickled exception loses its ``__cause__`` chain, where
the batcher tells "store unreachable" (retry later) from "this request's data refused" (400),
so the child classifies the failure and the parent raises an equivalent exception.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import fields
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.exc import DataError, InterfaceError, OperationalError

from ..errors import StoreError
from .events import Event, PodSnapshot, WriteResult
from .writer import PreparedBatch, prepare

__all__ = ["ProcessWriter"]

_FIELDS = tuple(f.name for f in fields(Event))
_pack = attrgetter(*_FIELDS)  # one C call per event: the fields as a tuple, in order
_START_TIMEOUT = 120.0  # the child imports SQLAlchemy and opens the store; slow on a busy box

# The child's state: one EventWriter on its own store (set by _start).
_writer: Any = None


def _start(url: str, raw_retention: timedelta) -> None:
    global _writer
    import signal

    from ..store import open_store

    # The parent decides when this process ends (after writing what is pending): a Ctrl-C or
    # a SIGTERM sent to the whole process group must not kill it under the parent's feet.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from .writer import EventWriter

    _writer = EventWriter(open_store(url, migrate_schema=False), raw_retention=raw_retention)


def _ready() -> bool:
    return _writer is not None


def _failure(exc: BaseException) -> tuple[str, str, dict[str, Any], str]:
    """(kind, message, detail, reason) of a failure, for the parent to raise again."""
    from .batcher import _caused_by, _reason

    if isinstance(exc, StoreError):
        message = exc.message
        detail = {k: v for k, v in exc.detail.items() if isinstance(v, str | int | float | bool)}
    else:
        message = f"the store refused the write: {_reason(exc)}"
        detail = {"temporary": True}
    if _caused_by(exc, (OperationalError, InterfaceError)) is not None:
        return "unreachable", message, detail, _reason(exc)
    data = _caused_by(exc, (DataError, OverflowError))
    if data is not None:
        return "data", message, detail, _reason(data)
    if isinstance(exc, StoreError):
        return "store", message, detail, message
    return "other", message, detail, f"{type(exc).__name__}: {_reason(exc)}"


def _write(rows: list[tuple[Any, ...]], now: datetime) -> tuple[bool, Any]:
    try:
        result = _writer.write([Event(*row) for row in rows], now=now)
    except Exception as exc:
        return False, _failure(exc)
    return True, (result.received, result.stored, result.duplicates)


def _write_prepared(batch: PreparedBatch) -> tuple[bool, Any]:
    try:
        result = _writer.write_prepared(batch)
    except Exception as exc:
        return False, _failure(exc)
    return True, (result.received, result.stored, result.duplicates)


def _write_snapshot(snapshot: PodSnapshot) -> tuple[bool, Any]:
    try:
        return True, _writer.write_snapshot(snapshot)
    except Exception as exc:
        return False, _failure(exc)


def _raise(failure: tuple[str, str, dict[str, Any], str]) -> None:
    """The child's failure as the exception the batcher would have seen from a thread."""
    kind, message, detail, reason = failure
    if kind == "unreachable":
        raise StoreError(message, **detail) from OperationalError(None, None, Exception(reason))
    if kind == "data":
        raise StoreError(message, **detail) from DataError(None, None, Exception(reason))
    if kind == "store":
        raise StoreError(message, **detail)
    raise RuntimeError(reason)


class ProcessWriter:
    """``EventWriter.write`` and ``write_snapshot`` run in one child process on ``url``.

    :meth:`start` before use (it waits until the child has opened the store), :meth:`close`
    after. The store must already be migrated (the child only opens it).
    """

    def __init__(self, url: str, *, raw_retention: timedelta = timedelta(days=30)) -> None:
        self.url = url
        self.raw_retention = raw_retention
        self._sqlite = make_url(url).get_backend_name() == "sqlite"
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        if self._pool is not None:
            return
        self._pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start, initargs=(self.url, self.raw_retention),
        )
        try:
            self._pool.submit(_ready).result(timeout=_START_TIMEOUT)
        except Exception as exc:
            self.close()
            raise StoreError(f"the writer process did not start: {type(exc).__name__}: {exc}",
                             temporary=True) from exc

    @property
    def pid(self) -> int | None:
        """The child's process id, once started (for CPU accounting)."""
        processes = getattr(self._pool, "_processes", None) or {}
        return next(iter(processes), None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _call(self, fn: Any, *args: Any) -> Any:
        if self._pool is None:
            raise StoreError("the writer process is not running", temporary=True)
        try:
            ok, value = self._pool.submit(fn, *args).result()
        except BrokenProcessPool as exc:
            # The child died: its transaction may or may not have committed, and the sender's
            # retry is safe either way (duplicates are stored once). A new child takes over.
            self._pool.shutdown(wait=False)
            self._pool = None
            self.start()
            raise StoreError(f"the writer process died: {exc}", temporary=True) from exc
        if not ok:
            _raise(value)
        return value

    def write(self, batch: Sequence[Event], *, now: datetime) -> WriteResult:
        if self._sqlite:
            received, stored, duplicates = self._call(_write_prepared, prepare(batch, now=now))
        else:
            received, stored, duplicates = self._call(_write, [_pack(e) for e in batch], now)
        return WriteResult(received, stored, duplicates)

    def write_snapshot(self, snapshot: PodSnapshot) -> int:
        refs: int = self._call(_write_snapshot, snapshot)
        return refs
