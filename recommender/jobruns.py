"""Runs of scheduled jobs in the store: claimed before they start, recorded when they end.

A run is a ``job_runs`` row. :meth:`JobRuns.claim` inserts it as running under a claim that
lasts ``scheduler.claim_ttl``; a partial unique index (one unfinished row per job) makes the
insert fail while another runner (a replica's scheduler, ``tagwarden suggest --post``) holds
the job, so a job never runs twice at once. The runner renews the claim while the job runs
(:meth:`JobRuns.running`) and records the outcome, duration and error at the end. A claim whose
runner vanished lapses: the next claim marks that run ``expired`` and takes the job.

The scheduler catches up from these rows: :meth:`JobRuns.last_completed` is the newest fire time
a finished run stood for, and a claim made ``unless_done`` gives way when a run for that fire
time (or a later one) finished meanwhile, so each missed fire time runs once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import case, delete, func, or_, select, type_coerce, update
from sqlalchemy.exc import IntegrityError

from .errors import JobBusy, LeaseLost
from .store import Store
from .store.tables import job_runs
from .store.types import UTCDateTime
from .timeutil import utcnow

__all__ = ["COMPLETED", "Claim", "JobRuns", "JobRunsCollector", "JobStatus"]

log = logging.getLogger(__name__)

# Outcomes of a run that count as done for catch-up: it ran (well or not), or the scheduler
# first saw the job then. ``expired`` and ``fenced`` runs did not complete: catch-up redoes them.
COMPLETED = ("success", "failed", "registered")


@dataclass(frozen=True)
class Claim:
    """A running run: who holds the job since when, until when, for which fire time."""

    id: int
    job: str
    owner: str
    scheduled_for: datetime
    trigger: str
    claimed_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class JobStatus:
    """One job's figures for ``/metrics``: when it last succeeded, how long its last finished
    run took, how many runs failed (over the runs kept)."""

    job: str
    last_success: datetime | None
    last_duration: float | None
    failures: int


class _AlreadyDone(Exception):
    """Rolls back a claim whose fire time another runner has completed meanwhile."""


class JobRuns:
    """``job_runs`` of one store. ``ttl`` is how long a claim lasts without renewal;
    ``idle`` how long one of these writes may sit idle in its transaction on PostgreSQL (a
    runner frozen inside one would keep the job's row, and every other runner waiting)."""

    def __init__(self, store: Store, *, ttl: timedelta,
                 clock: Callable[[], datetime] = utcnow,
                 idle: timedelta = timedelta(seconds=15)) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self.idle = idle

    def claim(self, job: str, *, owner: str, scheduled_for: datetime | None = None,
              trigger: str = "manual", unless_done: bool = False) -> Claim | None:
        """Start a run of ``job`` for ``scheduled_for`` (default: now); None while another
        runner holds the job, or (``unless_done``) when a run for that fire time or a later
        one has completed."""
        now = self.clock()
        scheduled_for = scheduled_for or now
        expires = now + self.ttl
        try:
            with self.store.begin(idle=self.idle) as conn:
                conn.execute(update(job_runs)
                             .where(job_runs.c.job == job, job_runs.c.finished_at.is_(None),
                                    job_runs.c.expires_at < now)
                             .values(finished_at=now, outcome="expired",
                                     error="the runner's claim lapsed"))
                # Insert first, check after: once the insert holds the job's running slot, a
                # run that completed before it is visible to the check.
                inserted = conn.execute(job_runs.insert().values(
                    job=job, scheduled_for=scheduled_for, trigger=trigger, claimed_by=owner,
                    claimed_at=now, expires_at=expires, outcome="running"))
                if unless_done and conn.execute(
                        select(func.count()).select_from(job_runs)
                        .where(job_runs.c.job == job, job_runs.c.outcome.in_(COMPLETED),
                               job_runs.c.scheduled_for >= scheduled_for)).scalar_one():
                    raise _AlreadyDone
                key = inserted.inserted_primary_key
                assert key is not None
                run_id = int(key[0])
        except IntegrityError:
            return None  # another unfinished run of the job holds the unique slot
        except _AlreadyDone:
            return None
        return Claim(id=run_id, job=job, owner=owner, scheduled_for=scheduled_for,
                     trigger=trigger, claimed_at=now, expires_at=expires)

    def claim_waiting(self, job: str, *, owner: str, wait: timedelta, poll: float = 1.0,
                      on_wait: Callable[[Claim], None] = lambda _held: None,
                      sleep: Callable[[float], None] = time.sleep) -> Claim:
        """A manual run's claim: when another runner holds ``job``, tell ``on_wait`` once and
        try again every ``poll`` seconds for up to ``wait``; then :class:`JobBusy`."""
        tries = max(0, math.ceil(wait.total_seconds() / poll))
        told = False
        for attempt in range(tries + 1):
            claim = self.claim(job, owner=owner, trigger="manual")
            if claim is not None:
                return claim
            if attempt == tries:
                break
            held = None if told else self.holder(job)
            if held is not None:
                on_wait(held)
                told = True
            sleep(poll)
        raise self.busy(job)

    def busy(self, job: str) -> JobBusy:
        """The error of a claim refused because another runner holds ``job``."""
        held = self.holder(job)
        if held is None:  # it finished between the refused claim and this look
            return JobBusy(f"job {job} was busy; try again", job=job)
        return JobBusy(f"job {job} is running on {held.owner} since "
                       f"{held.claimed_at.isoformat()} (claim until "
                       f"{held.expires_at.isoformat()}); not started", job=job,
                       held_by=held.owner, since=held.claimed_at.isoformat(),
                       until=held.expires_at.isoformat())

    def holder(self, job: str) -> Claim | None:
        """The unfinished run of ``job``, if any (its claim may have lapsed)."""
        with self.store.connect() as conn:
            row = conn.execute(select(job_runs).where(job_runs.c.job == job,
                                                      job_runs.c.finished_at.is_(None))).first()
        if row is None:
            return None
        return Claim(id=int(row.id), job=row.job, owner=row.claimed_by,
                     scheduled_for=row.scheduled_for, trigger=row.trigger,
                     claimed_at=row.claimed_at, expires_at=row.expires_at)

    def expire_runs_of(self, owner: str, *, reason: str) -> list[str]:
        """End every unfinished run claimed by ``owner`` as ``expired`` (with ``reason``): a
        leader that took over from ``owner`` need not wait for those claims to lapse. The
        names of the jobs freed."""
        now = self.clock()
        with self.store.begin(idle=self.idle) as conn:
            freed = conn.execute(update(job_runs)
                                 .where(job_runs.c.claimed_by == owner,
                                        job_runs.c.finished_at.is_(None))
                                 .values(finished_at=now, outcome="expired",
                                         error=reason[:2000])
                                 .returning(job_runs.c.job)).scalars().all()
        return sorted(freed)

    def renew(self, claim: Claim) -> bool:
        """Extend the claim by ``ttl``; False when it is no longer this runner's."""
        with self.store.begin(idle=self.idle) as conn:
            done = conn.execute(update(job_runs)
                                .where(job_runs.c.id == claim.id,
                                       job_runs.c.finished_at.is_(None))
                                .values(expires_at=self.clock() + self.ttl))
            return done.rowcount == 1

    def finish(self, claim: Claim, *, outcome: str, error: str | None = None) -> bool:
        """Record how the run ended; False when its claim had lapsed and another runner
        marked it expired (the outcome is then lost, and logged)."""
        now = self.clock()
        with self.store.begin(idle=self.idle) as conn:
            done = conn.execute(update(job_runs)
                                .where(job_runs.c.id == claim.id,
                                       job_runs.c.finished_at.is_(None))
                                .values(finished_at=now, outcome=outcome, error=error,
                                        duration_seconds=(now - claim.claimed_at)
                                        .total_seconds()))
        if done.rowcount != 1:
            log.warning("run %s of job %s ended (%s) after its claim lapsed", claim.id,
                        claim.job, outcome)
        return done.rowcount == 1

    @contextmanager
    def running(self, claim: Claim) -> Iterator[None]:
        """Renew ``claim`` every third of ``ttl`` while the body runs; then record ``success``,
        or ``failed`` with the exception's first line (and re-raise it), or ``fenced`` when
        the exception is :class:`LeaseLost` (the run did not complete: catch-up redoes it)."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.ttl.total_seconds() / 3):
                try:
                    if not self.renew(claim):
                        log.warning("job %s: the claim of run %s is lost", claim.job, claim.id)
                        return
                except Exception as exc:  # noqa: BLE001 - the store is away; retry next beat
                    log.warning("job %s: renewing run %s failed: %s", claim.job, claim.id, exc)

        renewer = threading.Thread(target=renew, daemon=True, name=f"claim-{claim.job}")
        renewer.start()
        try:
            yield
        except BaseException as exc:
            stop.set()
            renewer.join()
            lines = str(exc).strip().splitlines()
            self.finish(claim, outcome="fenced" if isinstance(exc, LeaseLost) else "failed",
                        error=f"{type(exc).__name__}: {lines[0] if lines else ''}"[:2000])
            raise
        stop.set()
        renewer.join()
        self.finish(claim, outcome="success")

    def last_completed(self, job: str) -> datetime | None:
        """The newest fire time a completed run of ``job`` stood for."""
        with self.store.connect() as conn:
            value = conn.execute(
                select(type_coerce(func.max(job_runs.c.scheduled_for), UTCDateTime()))
                .where(job_runs.c.job == job, job_runs.c.outcome.in_(COMPLETED))).scalar()
        return value if isinstance(value, datetime) else None

    def register(self, job: str, *, owner: str) -> bool:
        """Record that the scheduler runs ``job`` from now on, unless a run completed before:
        catch-up counts fire times from there. True when recorded."""
        if self.last_completed(job) is not None:
            return False
        now = self.clock()
        with self.store.begin(idle=self.idle) as conn:
            conn.execute(job_runs.insert().values(
                job=job, scheduled_for=now, trigger="baseline", claimed_by=owner, claimed_at=now,
                expires_at=now, finished_at=now, outcome="registered", duration_seconds=0.0))
        return True

    def prune(self, before: datetime) -> int:
        """Delete runs that finished before ``before``, except each job's newest completed run
        (catch-up counts from it). Returns how many."""
        with self.store.begin(idle=self.idle) as conn:
            newest = dict(conn.execute(
                select(job_runs.c.job, func.max(job_runs.c.scheduled_for))
                .where(job_runs.c.outcome.in_(COMPLETED)).group_by(job_runs.c.job)).all())
            old = job_runs.c.finished_at < before
            deleted = conn.execute(delete(job_runs).where(
                old, job_runs.c.job.not_in(list(newest)) if newest else old)).rowcount or 0
            for job, last in newest.items():
                deleted += conn.execute(delete(job_runs).where(
                    old, job_runs.c.job == job,
                    or_(job_runs.c.scheduled_for < last,
                        job_runs.c.outcome.not_in(COMPLETED)))).rowcount or 0
        return int(deleted)

    def status(self) -> list[JobStatus]:
        """Every job's last success, last duration and failures, by job name."""
        success = job_runs.c.outcome == "success"
        with self.store.connect() as conn:
            rows = conn.execute(
                select(job_runs.c.job,
                       type_coerce(func.max(case((success, job_runs.c.finished_at))),
                                   UTCDateTime()),
                       func.sum(case((job_runs.c.outcome == "failed", 1), else_=0)))
                .group_by(job_runs.c.job).order_by(job_runs.c.job)).all()
            newest = (select(func.max(job_runs.c.id))
                      .where(job_runs.c.outcome.in_(("success", "failed")))
                      .group_by(job_runs.c.job))
            durations = {row.job: row.duration_seconds for row in conn.execute(
                select(job_runs.c.job, job_runs.c.duration_seconds)
                .where(job_runs.c.id.in_(newest)))}
        return [JobStatus(job=name, last_success=last, last_duration=durations.get(name),
                          failures=int(failed or 0))
                for name, last, failed in rows]


class JobRunsCollector:
    """Prometheus series of every job, read from the store at each scrape, so whichever
    replica answers ``/metrics`` tells the same: ``tagwarden_job_last_success_timestamp_seconds``,
    ``tagwarden_job_last_duration_seconds`` and ``tagwarden_job_failures_total``, by job. A
    store that does not answer leaves them out of that scrape."""

    def __init__(self, status: Callable[[], list[JobStatus]]) -> None:
        self.status = status

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily("tagwarden_job_last_success_timestamp_seconds",
                              "When the job's last successful run ended (Unix time).",
                              labels=["job"]),
            GaugeMetricFamily("tagwarden_job_last_duration_seconds",
                              "How long the job's last finished run took.", labels=["job"]),
            CounterMetricFamily("tagwarden_job_failures",
                                "Runs of the job that failed (among the runs kept).",
                                labels=["job"]),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        try:
            found = self.status()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer while the store is away
            log.debug("job series left out of this scrape: %s", exc)
            return
        success, duration, failures = self._families()
        for s in found:
            if s.last_success is not None:
                success.add_metric([s.job], s.last_success.timestamp())
            if s.last_duration is not None:
                duration.add_metric([s.job], s.last_duration)
            failures.add_metric([s.job], s.failures)
        yield from (success, duration, failures)
