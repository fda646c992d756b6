"""Group commit: the events of many concurrent requests written in one transaction.

Each request hands its (already validated) events to :meth:`Batcher.submit` and awaits its own
outcome, so a 2xx answer means the events are durably stored. One flusher task gathers pending
requests and hands them to the writer on ONE thread (SQLite has a single writer anyway, and one
thread keeps PostgreSQL's row locks uncontended). A transaction holds at most
``max_events`` events (a request is never split: its events are stored together or not at all);
after a quiet spell (no write for ``max_delay``) a batch waits at most ``max_delay`` for company,
and while a write is running the next batch simply accumulates, so under load batches grow
instead of latency. Under load nothing waits: a batch goes as soon as the writer is free, so
the event loop prepares the next batch while the writer writes this one (waiting for company
then would gather every sender's request into one batch and leave loop and writer taking turns,
which halves the throughput with the writer in a process; bench/).

If a batch transaction fails, nothing of it is stored. Unless the store itself is unreachable
or locked (``StoreError.kind``, decided where the database's error is translated), each request
of the failed batch is then retried alone, so one request the database refuses (a NUL
character or a number out of range for PostgreSQL, say) cannot fail the requests that shared
its batch. A request the database refuses on its own for its data (kind ``REFUSED_DATA``) gets
:class:`PayloadError` (HTTP 400, nothing stored): retrying it could never succeed. Every other
failure is :class:`StoreError` (HTTP 503: the sender retries later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ..errors import PayloadError, StoreError, StoreFailure
from ..store.failures import first_line
from ..timeutil import utcnow
from .events import Event, WriteResult
from .metrics import CollectorMetrics

__all__ = ["Batcher", "EventSink", "Outcome"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class EventSink(Protocol):
    """What the batcher writes through: A1's ``EventWriter``, or ``ProcessWriter`` (which
    also has ``start()`` and ``close()``: the batcher calls them when the sink has them)."""

    def write(self, events: Sequence[Event], *, now: datetime) -> WriteResult: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """A request's events once stored: how many were accepted, and the ids of those that
    reuse an id already stored with other content (dropped: ``EventWriter.conflicting``)."""

    accepted: int
    conflicting: tuple[str, ...] = ()


@dataclass(slots=True)
class _Request:
    events: Sequence[Event]
    future: asyncio.Future[Outcome] = field(repr=False)


def _unreachable(exc: BaseException) -> bool:
    """True when the failure is the store's, not the data's (retrying alone cannot help)."""
    return isinstance(exc, StoreError) and exc.kind is StoreFailure.UNREACHABLE


class Batcher:
    """Writes submitted events in group-commit transactions on one writer thread.

    ``clock`` gives the ``now`` passed to the writer (the received time of the batch).
    ``max_pending`` bounds what may wait in memory; past it, :meth:`submit` refuses at once
    (the caller answers 503 and the sender retries later).
    """

    def __init__(
        self,
        sink: EventSink,
        *,
        max_events: int = 5000,
        max_delay: float = 0.005,
        max_pending: int | None = None,
        metrics: CollectorMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.sink = sink
        self.max_events = max_events
        self.max_delay = max(0.0, max_delay)
        self.max_pending = max_pending if max_pending is not None else 10 * max_events
        self.metrics = metrics if metrics is not None else CollectorMetrics()
        self.clock = clock
        self._pending: deque[_Request] = deque()
        self._pending_events = 0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> Batcher:
        self._loop = asyncio.get_running_loop()
        start = getattr(self.sink, "start", None)
        if callable(start):  # a writer process: blocks until it has opened the store
            await asyncio.to_thread(start)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tagwarden-writer")
        self._closing = False
        self._task = asyncio.create_task(self._flusher(), name="tagwarden-batcher")
        return self

    async def stop(self) -> None:
        """Write everything still pending, then stop the writer thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        close = getattr(self.sink, "close", None)
        if callable(close):
            await asyncio.to_thread(close)

    async def __aenter__(self) -> Batcher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._closing

    # --- the API --------------------------------------------------------------------------

    async def submit(self, events: Sequence[Event]) -> int:
        """Store ``events`` (in one transaction, possibly shared); return how many were accepted.
        :meth:`store`, counting only."""
        return (await self.store(events)).accepted

    async def store(self, events: Sequence[Event]) -> Outcome:
        """Store ``events`` (in one transaction, possibly shared): their :class:`Outcome`.

        Raises :class:`StoreError` when the store failed or the collector is overloaded or
        stopping, :class:`PayloadError` when the database refuses this request's own data;
        nothing of this request is stored then.
        """
        if not events:
            return Outcome(0)
        if not self.running or self._loop is None:
            raise StoreError("the collector is not running", temporary=True)
        if self._pending_events + len(events) > self.max_pending and self._pending:
            raise StoreError(
                "the collector is overloaded, retry later",
                temporary=True, pending=self._pending_events,
            )
        future: asyncio.Future[Outcome] = self._loop.create_future()
        self._pending.append(_Request(events, future))
        self._pending_events += len(events)
        if self._pending_events >= self.max_events:
            self._full.set()
        self._wakeup.set()
        return await future

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the writer thread (serialised with the batches)."""
        if self._executor is None or self._loop is None:
            raise StoreError("the collector is not running", temporary=True)
        return await self._loop.run_in_executor(self._executor, fn, *args)

    # --- the flusher ----------------------------------------------------------------------

    async def _flusher(self) -> None:
        assert self._loop is not None
        clock = self._loop.time
        last_write = -float("inf")
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                if self._closing:
                    return
                continue
            # Only a batch that starts after a quiet spell waits for company; within max_delay
            # of the last write, whatever accumulated goes at once (see the module doc).
            if (self.max_delay and self._pending_events < self.max_events
                    and clock() - last_write > self.max_delay):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.max_delay)
            batch = self._take()
            if self._pending:
                self._wakeup.set()
            await self._write(batch)
            last_write = clock()
            self._wakeup.set()  # look again: more may have come, or we go idle

    def _take(self) -> list[_Request]:
        batch: list[_Request] = []
        count = 0
        while self._pending:
            size = len(self._pending[0].events)
            if batch and count + size > self.max_events:
                break
            batch.append(self._pending.popleft())
            count += size
        self._pending_events -= count
        if self._pending_events < self.max_events:
            self._full.clear()
        return batch

    async def _write(self, batch: list[_Request]) -> None:
        events = [e for request in batch for e in request.events]
        try:
            result = await self._write_events(events)
        except Exception as exc:
            if len(batch) > 1 and not _unreachable(exc):
                for request in batch:
                    await self._write([request])
                return
            log.warning("write of %d events failed: %s", len(events), exc,
                        exc_info=not isinstance(exc, StoreError))
            error = _as_error(exc)
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
            return
        self.metrics.batch_requests.observe(len(batch))  # successful transactions only
        self.metrics.stored.inc(result.stored)
        self.metrics.duplicates.inc(result.duplicates)
        self.metrics.conflicting.inc(len(result.conflicting))
        conflicting = iter(sorted(result.conflicting))
        position = next(conflicting, None)
        end = 0
        for request in batch:
            end += len(request.events)
            mine = []
            while position is not None and position < end:
                mine.append(events[position].source_event_id)
                position = next(conflicting, None)
            if not request.future.done():
                request.future.set_result(Outcome(len(request.events), tuple(mine)))

    async def _write_events(self, events: list[Event]) -> WriteResult:
        assert self._loop is not None and self._executor is not None
        now = self.clock()
        started = time.perf_counter()

        def run() -> WriteResult:
            return self.sink.write(events, now=now)

        result = await self._loop.run_in_executor(self._executor, run)
        self.metrics.write_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_events.observe(len(events))
        return result


def _as_error(exc: Exception) -> StoreError | PayloadError:
    if isinstance(exc, StoreError):
        if exc.kind is StoreFailure.REFUSED_DATA:
            return PayloadError(f"the store refuses this request's data: {exc.reason}",
                                where="store")
        return exc
    return StoreError(f"the store refused the write: {first_line(exc)}", temporary=True)
