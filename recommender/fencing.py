"""The fence a scheduled job's writes run under.

The scheduler runs each job inside :func:`fenced` with its lease's check. While it is set,
every write transaction of :meth:`recommender.store.Store.begin` calls the check inside the
transaction just before it commits, so a job that started under a valid lease and outlived it
(a frozen or cut-off leader that resumed) commits nothing more: its write raises
:class:`~recommender.errors.LeaseLost` and rolls back. Jobs call :func:`check` before acting
outside the store (a registry DELETE, a Slack post).

A write that records an effect already made (a manifest deleted, a message posted) must not be
lost to the fence, or the audit would miss it: it runs inside :func:`unfenced`. Those writes
are guarded by their own claims (the executor's item lease, the batch's posting claim).

A job's write transactions are also bounded in time on PostgreSQL (``idle``):
a leader frozen or cut off inside one would otherwise keep its row locks, and so the next
leader's jobs waiting, until TCP gives up. The bound holds inside :func:`unfenced` too.

Both are a context variable: they follow the job into ``asyncio`` tasks and
``asyncio.to_thread``; a thread pool the job starts gets them with :func:`carry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection

__all__ = ["Fence", "carry", "check", "current", "fenced", "idle_limit", "unfenced"]

Fence = Callable[[Connection | None], None]
T = TypeVar("T")


class _InForce(NamedTuple):
    fence: Fence | None
    idle: timedelta | None


_NONE = _InForce(None, None)
_STATE: ContextVar[_InForce] = ContextVar("tagwarden_fence", default=_NONE)


def current() -> Fence | None:
    """The fence in force here, if any."""
    return _STATE.get().fence


def idle_limit() -> timedelta | None:
    """How long a write transaction here may sit idle on PostgreSQL, if bounded."""
    return _STATE.get().idle


@contextmanager
def fenced(fence: Fence, *, idle: timedelta | None = None) -> Iterator[None]:
    """Run the body's writes under ``fence``, each transaction idle at most ``idle``."""
    token = _STATE.set(_InForce(fence, idle))
    try:
        yield
    finally:
        _STATE.reset(token)


@contextmanager
def unfenced() -> Iterator[None]:
    """Run the body's writes under no fence (the idle bound stays): for recording what was
    already done."""
    token = _STATE.set(_InForce(None, _STATE.get().idle))
    try:
        yield
    finally:
        _STATE.reset(token)


def check(conn: Connection | None = None) -> None:
    """Raise :class:`~recommender.errors.LeaseLost` when a fence is in force and refuses;
    with ``conn``, check inside that transaction too. Nothing without a fence."""
    fence = _STATE.get().fence
    if fence is not None:
        fence(conn)


def carry(func: Callable[..., T]) -> Callable[..., T]:
    """``func`` bound to the caller's fence, to run on another thread (a pool's worker)."""
    context = copy_context()

    def run(*args: Any, **kwargs: Any) -> T:
        # A copy per call: one context cannot be entered by two threads at once.
        return context.copy().run(func, *args, **kwargs)

    return run
