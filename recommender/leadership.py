"""Leadership of the scheduled jobs: a lease in the store that expires.

One row of ``scheduler_lock`` (``name``, ``owner``, ``expires_at``) names the replica that runs
the jobs until ``expires_at``. The leader renews it every ``ttl / 3``; any replica takes it once
it has lapsed. Nothing depends on a connection staying open, so a leader that freezes (SIGSTOP,
a VM pause), dies or loses its network loses the lead when its lease runs out, whatever the TCP
keepalives say.

Clocks. On PostgreSQL the database computes and compares the expiry (``clock_timestamp()``), so
replicas whose clocks disagree still agree on who holds the lease. On SQLite every replica runs
on the one host that holds the file, so the local clock is the database's. A ``clock`` given to
:class:`Lease` (tests) replaces both.

Fencing. The holder also keeps a local deadline on its monotonic clock, taken *before* each
renewal is sent: ``sent + ttl - margin``. The database's expiry is at least ``sent + ttl``, so
the local deadline always comes first; past it :meth:`Lease.holds` is false and
:meth:`Lease.fence` raises :class:`~recommender.errors.LeaseLost` until a renewal succeeds
again. A frozen leader that resumes finds its deadline passed and starts nothing.
``fence(conn)`` also checks the row inside the caller's write transaction and keeps a takeover
from committing until that transaction ends (PostgreSQL ``FOR SHARE``; on SQLite a takeover
between the check and the write makes the write fail, as WAL snapshots do).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import ColumnElement, Connection, DateTime, Interval, delete, func, literal, select

from .errors import LeaseLost
from .store import Store, bound_idle, dialect_insert
from .store.tables import scheduler_lock
from .store.types import UTCDateTime
from .timeutil import utcnow

__all__ = ["LOCK_NAME", "Lease", "LeadershipMetrics", "replica_id"]

log = logging.getLogger(__name__)

LOCK_NAME = "tagwarden-scheduler"


def replica_id() -> str:
    """``<hostname>-<pid>-<random>``: on Kubernetes the hostname is the pod's name, so the log
    and ``/metrics`` say which pod leads; the random part tells a restarted process apart."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"[-128:]


class Lease:
    """The scheduler's lease for ``owner``, lasting ``ttl`` after each successful renewal.

    ``clock`` (a UTC wall clock) replaces the database's clock; ``monotonic`` is the local
    clock of the fencing deadline; ``margin`` (default ``ttl / 5``) how much earlier than the
    database this replica considers its lease gone: room for the write that follows a fence
    check and for clocks that run at slightly different rates.
    """

    def __init__(self, store: Store, owner: str, ttl: timedelta, *, name: str = LOCK_NAME,
                 clock: Callable[[], datetime] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 margin: timedelta | None = None) -> None:
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self.name = name
        self.clock = clock
        self.monotonic = monotonic
        self.margin = margin if margin is not None else ttl / 5
        self.holder: str | None = None  # who held the lease at the last acquire()
        self._deadline: float | None = None
        self._lock = threading.Lock()

    def _times(self, at: datetime | None) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
        """The SQL for "now" and for "now + ttl"."""
        if at is not None or self.clock is not None or self.store.dialect != "postgresql":
            value = at or (self.clock() if self.clock is not None else utcnow())
            return literal(value, UTCDateTime()), literal(value + self.ttl, UTCDateTime())
        # clock_timestamp(), not now(): now() is the transaction's start.
        now = func.clock_timestamp(type_=DateTime(timezone=True))
        return now, now + literal(self.ttl, Interval())

    def acquire(self, at: datetime | None = None) -> bool:
        """Take the lease when it is free or lapsed, renew it when ours; True while held.

        ``at`` is the time to use (tests); by default the database's (see the module's
        docstring). A failure to reach the store raises and leaves the local deadline as the
        last successful renewal set it.
        """
        sent = self.monotonic()
        now, expires = self._times(at)
        with self.store.begin() as conn:
            # A holder frozen inside this transaction must not keep the row from takeovers.
            bound_idle(conn, self.ttl / 3)
            insert: Any = dialect_insert(conn, scheduler_lock)
            # One statement, atomic on both databases: a contender waits on the row and then
            # sees the winner's expiry.
            taken = conn.execute(
                insert.values(name=self.name, owner=self.owner, expires_at=expires)
                .on_conflict_do_update(
                    index_elements=[scheduler_lock.c.name],
                    set_={"owner": self.owner, "expires_at": expires},
                    where=(scheduler_lock.c.owner == self.owner)
                    | (scheduler_lock.c.expires_at < now))
                .returning(scheduler_lock.c.owner)).first()
            holder = self.owner if taken is not None else conn.execute(
                select(scheduler_lock.c.owner)
                .where(scheduler_lock.c.name == self.name)).scalar()
        deadline = sent + (self.ttl - self.margin).total_seconds()
        with self._lock:
            self.holder = holder
            self._deadline = deadline if holder == self.owner else None
        return holder == self.owner

    def holds(self) -> bool:
        """Whether this replica may act as the leader now: its local deadline has not passed."""
        with self._lock:
            deadline = self._deadline
        return deadline is not None and self.monotonic() < deadline

    def fence(self, conn: Connection | None = None) -> None:
        """Raise :class:`LeaseLost` unless this replica holds the lease. With ``conn`` (a
        write transaction), also check the row in the database and hold it against a takeover
        until that transaction ends: call it before a job's final writes, in their
        transaction."""
        if not self.holds():
            raise LeaseLost(f"{self.owner} does not hold the scheduler lease",
                            owner=self.owner, reason="not renewed in time")
        if conn is None:
            return
        query = (select(scheduler_lock.c.owner)
                 .where(scheduler_lock.c.name == self.name)
                 .where(scheduler_lock.c.owner == self.owner)
                 .where(scheduler_lock.c.expires_at > self._times(None)[0]))
        if conn.dialect.name == "postgresql":
            bound_idle(conn, self.ttl)
            query = query.with_for_update(read=True)
        if conn.execute(query).first() is None:
            raise LeaseLost(f"{self.owner} does not hold the scheduler lease in the store",
                            owner=self.owner, reason="expired or taken over")

    def release(self) -> None:
        """Give the lease up (shutdown), so a follower takes over at its next round."""
        with self._lock:
            self._deadline = None
        with self.store.begin() as conn:
            conn.execute(delete(scheduler_lock).where(scheduler_lock.c.name == self.name)
                         .where(scheduler_lock.c.owner == self.owner))


class LeadershipMetrics:
    """``tagwarden_scheduler_leader{replica}`` (1 while leading) and
    ``tagwarden_scheduler_leadership_changes_total{replica, change}`` (gained, lost)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        # livesum: with several worker processes each is a replica of its own (its own label);
        # a dead worker's value goes with it.
        self.leader = Gauge(
            "tagwarden_scheduler_leader", "1 while this replica holds the scheduler's lease "
            "and runs the scheduled jobs, else 0.", ["replica"], registry=registry,
            multiprocess_mode="livesum")
        self.changes = Counter(
            "tagwarden_scheduler_leadership_changes",
            "Times this replica gained or lost the scheduler's lead.", ["replica", "change"],
            registry=registry)

    def set(self, replica: str, leading: bool) -> None:
        self.leader.labels(replica).set(1 if leading else 0)

    def change(self, replica: str, gained: bool) -> None:
        self.set(replica, gained)
        self.changes.labels(replica, "gained" if gained else "lost").inc()
