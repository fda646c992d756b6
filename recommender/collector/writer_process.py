"""The event writer in a child process: the collector's writes off its event loop's GIL.

In one process the event loop (HTTP, parsing) and the writer thread take turns on one GIL, so
a collector never uses much more than one core, however many it has. :class:`ProcessWriter`
has the same ``write``/``write_snapshot`` interface as ``EventWriter`` and runs one in a
child process (``spawn``: forking a process that has threads is unsafe), which opens its own
connection to the same store. The batcher still calls it from its one writer thread, which
now only waits for the child (without the GIL), so batches, group commit and "a 2xx only once
committed" are unchanged.

On SQLite the batch is planned here, with the writer's ``prepare`` (what ``EventWriter.write`` does
first), and the child only runs ``write_prepared``: the child is the busier of the two, and
planning is part of its share (bench/). On
PostgreSQL events cross as plain tuples (pickling slotted dataclasses calls Python code per
object).

The child's failures cross the pipe as exceptions: a :class:`StoreError` whole (its ``kind``
tells the batcher "store unreachable", retry later, from "this request's data refused", 400),
anything else as a :class:`RuntimeError` with its type and first line (a bug: the batcher
answers 503).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from sqlalchemy import make_url

from ..errors import StoreError
from ..store.failures import first_line
from .events import Event, PodSnapshot, WriteResult, event_fields
from .prepared import PreparedBatch, prepare

__all__ = ["ProcessWriter"]

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


def _failure(exc: Exception) -> Exception:
    """The failure to raise again in the parent, as it will survive pickling (the chain does
    not; SQLAlchemy's exceptions do not unpickle)."""
    if isinstance(exc, StoreError):
        detail = {k: v for k, v in exc.detail.items() if isinstance(v, str | int | float | bool)}
        return StoreError(exc.message, kind=exc.kind, reason=exc.reason, **detail)
    return RuntimeError(f"{type(exc).__name__}: {first_line(exc)}")


def _write(rows: list[tuple[Any, ...]], now: datetime) -> tuple[bool, Any]:
    try:
        result = _writer.write([Event(*row) for row in rows], now=now)
    except Exception as exc:
        return False, _failure(exc)
    return True, (result.received, result.stored, result.duplicates, result.conflicting)


def _write_prepared(batch: PreparedBatch) -> tuple[bool, Any]:
    try:
        result = _writer.write_prepared(batch)
    except Exception as exc:
        return False, _failure(exc)
    return True, (result.received, result.stored, result.duplicates)


def _conflicting(rows: list[tuple[Any, ...]]) -> tuple[bool, Any]:
    try:
        return True, _writer.conflicting([Event(*row) for row in rows])
    except Exception as exc:
        return False, _failure(exc)


def _write_snapshot(snapshot: PodSnapshot) -> tuple[bool, Any]:
    try:
        return True, _writer.write_snapshot(snapshot)
    except Exception as exc:
        return False, _failure(exc)


def _serve(conn: Connection, url: str, raw_retention: timedelta) -> None:
    """The child: open the store, say so, then answer one call at a time until told to stop."""
    try:
        _start(url, raw_retention)
    except Exception as exc:
        conn.send((False, f"{type(exc).__name__}: {exc}"))
        return
    conn.send((True, None))
    calls: dict[str, Callable[..., tuple[bool, Any]]] = {
        "write": _write, "write_prepared": _write_prepared, "write_snapshot": _write_snapshot,
    "conflicting": _conflicting}
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the parent is gone
            return
        if request is None:
            return
        name, args = request
        conn.send(calls[name](*args))


class ProcessWriter:
    """``EventWriter.write`` and ``write_snapshot`` run in one child process on ``url``.

    :meth:`start` before use (it waits until the child has opened the store), :meth:`close`
    after. The store must already be migrated (the child only opens it). Calls come from one
    thread at a time (the batcher's writer thread) and go over a pipe: the calling thread
    pickles and sends, then waits for the answer without the GIL, with no helper threads
    between it and the child (each hop would wait for the event loop's GIL).
    """

    def __init__(self, url: str, *, raw_retention: timedelta = timedelta(days=30)) -> None:
        self.url = url
        self.raw_retention = raw_retention
        self._sqlite = make_url(url).get_backend_name() == "sqlite"
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None

    def start(self) -> None:
        if self._conn is not None:
            return
        ctx = multiprocessing.get_context("spawn")
        conn, child_conn = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(child_conn, self.url, self.raw_retention),
                              name="tagwarden-writer", daemon=True)
        process.start()
        child_conn.close()
        try:
            if not conn.poll(_START_TIMEOUT):
                raise TimeoutError(f"no answer in {_START_TIMEOUT:.0f} s")
            ok, message = conn.recv()
            if not ok:
                raise RuntimeError(message)
        except (EOFError, OSError, TimeoutError, RuntimeError) as exc:
            conn.close()
            process.kill()
            process.join()
            raise StoreError(f"the writer process did not start: {type(exc).__name__}: {exc}",
                             temporary=True) from exc
        self._conn, self._process = conn, process

    @property
    def pid(self) -> int | None:
        """The child's process id, once started (for CPU accounting)."""
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(None)  # the child finishes the call in hand, then exits
            conn.close()
        if process is not None:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()

    def _call(self, name: str, *args: Any) -> Any:
        if self._conn is None:
            raise StoreError("the writer process is not running", temporary=True)
        try:
            self._conn.send((name, args))
            ok, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            # The child died: its transaction may or may not have committed, and the sender's
            # retry is safe either way (duplicates are stored once). A new child takes over.
            self.close()
            self.start()
            raise StoreError(f"the writer process died: {type(exc).__name__}: {exc}",
                             temporary=True) from exc
        if not ok:
            raise value
        return value

    def write(self, batch: Sequence[Event], *, now: datetime) -> WriteResult:
        if not self._sqlite:
            return WriteResult(*self._call("write", list(map(event_fields, batch)), now))
        received, stored, duplicates = self._call("write_prepared", prepare(batch, now=now))
        conflicting = self._call("conflicting", list(map(event_fields, batch))) \
            if duplicates else []  # as EventWriter.write, once committed
        return WriteResult(received, stored, duplicates, conflicting)

    def write_snapshot(self, snapshot: PodSnapshot) -> int:
        refs: int = self._call("write_snapshot", snapshot)
        return refs
