"""Scheduled jobs, run by exactly one replica.

Every replica of ``tagwarden serve`` serves HTTP; one of them runs the jobs. Leadership is a
database lock: on PostgreSQL a session advisory lock (``pg_try_advisory_lock``) held by a
dedicated connection, released by the server when that connection dies; on SQLite a lock row
with an expiry that the leader renews. A small elector thread tries to take or keep the lock
every ``interval`` seconds; the leader runs an APScheduler 3 ``BackgroundScheduler`` whose jobs
live in the store's database (``SQLAlchemyJobStore``), a follower runs none. A leader that loses
its lock stops its scheduler at once (running jobs finish).

Every run is claimed in the store before it starts (:mod:`.jobruns`): two replicas, or a
replica and ``tagwarden suggest --post``, never run a job at once. A fired job runs for the
newest of its fire times that passed since its last completed run, and the leader looks for such
missed fire times when it takes over and every ``scheduler.catch_up_interval``: a run lost to a
change of leader, a database outage or a busy claim happens once, late, not once per missed tick.

Jobs take ``now`` from the scheduler's clock: scan (with a registry), execute (every minute,
with a registry; then draw finished results in Slack), suggest and post (with a Slack token),
retrain (weekly), and one digest per team with a channel, on a cron in the team's time zone.
There is no Kubernetes poll job yet: pod lists arrive through the collector (POST or
`tagwarden ingest k8s`).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio.to_thread
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Connection, delete, select, text, update

from .config import Config
from .jobruns import Claim, JobRuns
from .notify import Notifier, load_notifier
from .store import Store, dialect_insert
from .store.tables import scheduler_lock
from .timeutil import utcnow

__all__ = [
    "AdvisoryLock",
    "JobSpec",
    "LeaderLock",
    "RowLock",
    "Scheduler",
    "default_jobs",
    "latest_fire_time",
    "leader_lock",
    "lifespan_hook",
]

log = logging.getLogger(__name__)

LOCK_NAME = "tagwarden-scheduler"
# pg_try_advisory_lock takes a bigint; a fixed key derived from the lock's name.
ADVISORY_KEY = int.from_bytes(b"tagwardn", "big") & 0x7FFF_FFFF_FFFF_FFFF
JOBS_TABLE = "apscheduler_jobs"


# --- leadership --------------------------------------------------------------------------------


class LeaderLock(Protocol):
    def acquire(self, now: datetime) -> bool:
        """Take or renew the lock; True while this replica holds it."""

    def release(self) -> None: ...


class AdvisoryLock:
    """PostgreSQL: a session advisory lock on one dedicated connection."""

    def __init__(self, store: Store, key: int = ADVISORY_KEY) -> None:
        self.store = store
        self.key = key
        self._conn: Connection | None = None

    def acquire(self, now: datetime) -> bool:
        try:
            if self._conn is not None:
                # Held: make sure the session (and so the lock) is still alive.
                self._conn.execute(text("SELECT 1"))
                return True
            conn = self.store.engine.connect()
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                    {"k": self.key}).scalar())
            conn.commit()
            if got:
                self._conn = conn
            else:
                conn.close()
            return got
        except Exception as exc:  # a dead connection means the lock is gone with it
            log.warning("scheduler lock lost: %s", exc)
            self._drop()
            return False

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:  # noqa: BLE001 - already broken; nothing left to release
                pass
        self._conn = None

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.commit()
                self._conn.close()
            except Exception as exc:  # noqa: BLE001 - closing the session releases it anyway
                log.warning("scheduler lock release: %s", exc)
                self._drop()
        self._conn = None


class RowLock:
    """Any database: one row naming the owner until ``expires_at``; the owner renews it."""

    def __init__(self, store: Store, owner: str, ttl: timedelta, name: str = LOCK_NAME) -> None:
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self.name = name

    def acquire(self, now: datetime) -> bool:
        expires = now + self.ttl
        with self.store.begin() as conn:
            # Take it when free (no row), expired, or ours; then read who holds it (rowcount
            # of INSERT ... ON CONFLICT DO NOTHING is not reliable across drivers).
            insert: Any = dialect_insert(conn, scheduler_lock)
            conn.execute(insert.values(name=self.name, owner=self.owner, expires_at=expires)
                         .on_conflict_do_nothing())
            conn.execute(update(scheduler_lock)
                         .where(scheduler_lock.c.name == self.name)
                         .where((scheduler_lock.c.owner == self.owner)
                                | (scheduler_lock.c.expires_at < now))
                         .values(owner=self.owner, expires_at=expires))
            holder = conn.execute(select(scheduler_lock.c.owner)
                                  .where(scheduler_lock.c.name == self.name)).scalar()
            return holder == self.owner

    def release(self) -> None:
        with self.store.begin() as conn:
            conn.execute(delete(scheduler_lock).where(scheduler_lock.c.name == self.name)
                         .where(scheduler_lock.c.owner == self.owner))


def leader_lock(store: Store, owner: str, ttl: timedelta) -> LeaderLock:
    if store.dialect == "postgresql":
        return AdvisoryLock(store)
    return RowLock(store, owner, ttl)


# --- jobs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    name: str
    trigger: BaseTrigger
    func: Callable[[datetime], Any]


# Running schedulers by owner id. Jobs in the database are references to :func:`_run` with
# (owner, name) as arguments (the job store pickles them), so they find their Scheduler here.
_ACTIVE: dict[str, Scheduler] = {}
# Catch-up runs and the sweep that finds them live in memory: they belong to one leadership.
CATCH_UP_STORE = "catch-up"
# More fire times than this since the last completed run (an interval job after a long outage)
# are not walked one by one: the run stands for the last one reached.
MAX_FIRE_TIMES = 100_000


def _run(owner: str, name: str) -> None:
    scheduler = _ACTIVE.get(owner)
    if scheduler is None:
        log.warning("job %s fired for an inactive scheduler %s", name, owner)
        return
    scheduler.fire(name)


def _no_fence() -> None:
    """The default fence: nothing to check beyond the leadership the scheduler already has."""


def latest_fire_time(trigger: BaseTrigger, after: datetime, now: datetime) -> datetime | None:
    """The newest fire time of ``trigger`` in (``after``, ``now``]; None when none fell due."""
    latest: datetime | None = None
    fire = trigger.get_next_fire_time(after, now)
    if fire is not None and fire <= after:  # a trigger that does not move past ``after``
        return None
    for _ in range(MAX_FIRE_TIMES):
        if fire is None or fire > now:
            break
        latest = fire
        fire = trigger.get_next_fire_time(fire, now)
    return latest


class Scheduler:
    """``Scheduler(config, store).start()`` in the server's lifespan; ``stop()`` on shutdown.

    ``jobs`` defaults to :func:`default_jobs`; ``interval`` is how often leadership is
    checked (renewing a lock row lasts ``scheduler.lock_ttl``). ``fence`` is called after a
    run is claimed and before it starts; an exception from it (this replica no longer leads)
    leaves the run undone, recorded as ``fenced``, for the leader's catch-up.
    """

    def __init__(self, config: Config, store: Store, *,
                 jobs: list[JobSpec] | None = None,
                 clock: Callable[[], datetime] = utcnow, owner: str | None = None,
                 lock: LeaderLock | None = None, interval: float | None = None,
                 fence: Callable[[], None] = _no_fence) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.owner = owner or f"replica-{secrets.token_hex(6)}"
        self.fence = fence
        self.runs = JobRuns(store, ttl=config["scheduler.claim_ttl"], clock=clock)
        self.catch_up_interval: timedelta = config["scheduler.catch_up_interval"]
        ttl: timedelta = config["scheduler.lock_ttl"]
        self.lock = lock or leader_lock(store, self.owner, ttl)
        self.interval = interval if interval is not None else max(ttl.total_seconds() / 3, 0.05)
        self.jobs: Mapping[str, JobSpec] = {j.name: j for j in (
            jobs if jobs is not None else default_jobs(config, store))}
        self._aps: BackgroundScheduler | None = None
        self._aps_store: Store | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()

    @property
    def is_leader(self) -> bool:
        return self._aps is not None

    def start(self) -> Scheduler:
        _ACTIVE[self.owner] = self
        self._stop.clear()
        self._thread = threading.Thread(target=self._elect_loop, daemon=True,
                                        name=f"scheduler-{self.owner}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._step_down()
        try:
            self.lock.release()
        except Exception as exc:  # noqa: BLE001 - shutting down; the lock expires anyway
            log.warning("scheduler lock release failed: %s", exc)
        _ACTIVE.pop(self.owner, None)

    def _elect_loop(self) -> None:
        while not self._stop.is_set():
            self.elect()
            self._stop.wait(self.interval)

    def elect(self) -> bool:
        """One round: take or keep the lock, start or stop the jobs accordingly."""
        try:
            leader = self.lock.acquire(self.clock())
        except Exception as exc:  # noqa: BLE001 - the database is away: not the leader
            log.warning("scheduler election failed: %s", exc)
            leader = False
        if leader and self._aps is None:
            self._take_over()
        elif not leader and self._aps is not None:
            log.warning("%s lost the scheduler lock; stopping jobs", self.owner)
            self._step_down()
        return leader

    def _take_over(self) -> None:
        with self._state_lock:
            # The job store gets its own engine on the same database: APScheduler disposes
            # its engine on shutdown, which must not pull the store's pool from under others.
            own = Store.from_url(self.store.engine.url.render_as_string(hide_password=False))
            aps = BackgroundScheduler(
                jobstores={"default": SQLAlchemyJobStore(engine=own.engine,
                                                         tablename=JOBS_TABLE),
                           CATCH_UP_STORE: MemoryJobStore()},
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
                timezone="UTC",
            )
            aps.start(paused=True)
            # Jobs of an earlier leader are replaced: their arguments name that leader.
            known = set(self.jobs)
            for job in aps.get_jobs():
                if job.id not in known:
                    job.remove()
            for spec in self.jobs.values():
                aps.add_job(_run, trigger=spec.trigger, args=(self.owner, spec.name),
                            id=spec.name, name=spec.name, replace_existing=True)
            # At once, then every catch_up_interval: runs missed before this leadership, or
            # while the store was away or the job was busy.
            aps.add_job(self.catch_up, IntervalTrigger(
                seconds=self.catch_up_interval.total_seconds()), id="catch-up",
                jobstore=CATCH_UP_STORE, next_run_time=utcnow())
            aps.resume()
            self._aps = aps
            self._aps_store = own
            log.info("%s runs the scheduled jobs: %s", self.owner, ", ".join(sorted(known)))

    def _step_down(self) -> None:
        with self._state_lock:
            if self._aps is not None:
                self._aps.shutdown(wait=False)
                self._aps = None
            if self._aps_store is not None:
                # After the scheduler thread has ended: it may have reconnected after
                # APScheduler's own dispose.
                self._aps_store.dispose()
                self._aps_store = None

    def run_job(self, name: str) -> Any:
        """Run one job now, by hand (`tagwarden` commands, tests): claimed like a scheduled
        run; :class:`JobBusy` while another runner holds the job."""
        if self._stop.is_set() and self._aps is None:
            return None
        claim = self.runs.claim(name, owner=self.owner, trigger="manual")
        if claim is None:
            raise self.runs.busy(name)
        return self._execute(claim)

    def fire(self, name: str, trigger: str = "schedule") -> Any:
        """Run ``name`` for the newest of its fire times since its last completed run, unless
        none fell due or another runner holds it or has done it (APScheduler calls this)."""
        spec = self.jobs.get(name)
        if spec is None:
            return None
        now = self.clock()
        last = self.runs.last_completed(name)
        due = now if last is None else latest_fire_time(spec.trigger, last, now)
        if due is None:
            log.debug("job %s: no fire time due since %s", name, last)
            return None
        claim = self.runs.claim(name, owner=self.owner, scheduled_for=due, trigger=trigger,
                                unless_done=True)
        if claim is None:
            log.info("job %s for %s: running elsewhere or done", name, due.isoformat())
            return None
        return self._execute(claim)

    def catch_up(self) -> list[str]:
        """Register jobs seen for the first time; queue one run of each job whose fire time
        passed without a completed run. The names of the jobs queued."""
        queued: list[str] = []
        aps = self._aps
        if aps is None:
            return queued
        now = self.clock()
        for spec in self.jobs.values():
            try:
                if self.runs.register(spec.name, owner=self.owner):
                    continue
                last = self.runs.last_completed(spec.name)
                holder = self.runs.holder(spec.name)
            except Exception as exc:  # noqa: BLE001 - the store is away: the next sweep retries
                log.warning("catch-up of job %s failed: %s", spec.name, exc)
                continue
            if last is None or (holder is not None and holder.expires_at >= now):
                continue
            due = latest_fire_time(spec.trigger, last, now)
            if due is None:
                continue
            log.info("job %s missed its run of %s; running it once now", spec.name,
                     due.isoformat())
            aps.add_job(self.fire, "date", args=(spec.name, "catch-up"),
                        id=f"catch-up:{spec.name}", jobstore=CATCH_UP_STORE,
                        replace_existing=True, misfire_grace_time=None)
            queued.append(spec.name)
        return queued

    def _execute(self, claim: Claim) -> Any:
        try:
            self.fence()
        except Exception as exc:  # noqa: BLE001 - any refusal of the fence: do not start
            log.warning("job %s not started: %s", claim.job, exc)
            self.runs.finish(claim, outcome="fenced", error=str(exc)[:2000])
            return None
        now = self.clock()
        log.info("job %s (%s of %s) at %s", claim.job, claim.trigger,
                 claim.scheduled_for.isoformat(), now.isoformat())
        with self.runs.running(claim):
            return self.jobs[claim.job].func(now)


def default_jobs(config: Config, store: Store,
                 notifier: Notifier | None = None) -> list[JobSpec]:
    """The production jobs. Each imports its part lazily: the model stack and the Slack
    client load only in the replica that runs them. ``notifier`` (default: the installed one)
    posts the suggestions, the results and the digests."""
    notifier = notifier if notifier is not None else load_notifier(config)

    def cron(key: str, timezone: str = "UTC") -> CronTrigger:
        return CronTrigger.from_crontab(config.get(key), timezone=timezone)

    def execute(now: datetime) -> Any:
        from .executor import CallLog, Executor, make_registry_client

        calls = CallLog()
        client = make_registry_client(config, calls)
        try:
            report = Executor(store, client, config, calls=calls).run_due(now)
        finally:
            client.close()
        notifier.publish_results(store, now=now)  # nothing when Slack is off
        return report

    def suggest_and_post(now: datetime) -> Any:
        from .recommend import suggest

        found = suggest(store, config, now=now)
        return notifier.post_suggestions(store, found, now=now)

    def retrain(now: datetime) -> Any:
        from .model import train

        return train(store, config, now=now)

    def scan(now: datetime) -> Any:
        import asyncio

        from . import inventory
        from .registry import AsyncRegistryClient

        workers = config["registry.concurrency"]

        async def run() -> Any:
            async with AsyncRegistryClient.from_config(config,
                                                       max_connections=workers) as client:
                return await inventory.scan_async(store, client, now=now, concurrency=workers)

        return asyncio.run(run())

    def prune(now: datetime) -> Any:
        from .collector.writer import EventWriter

        return EventWriter.from_config(store, config).prune(now)

    jobs = [JobSpec("retrain", cron("scheduler.retrain_cron"), retrain),
            JobSpec("prune", cron("scheduler.prune_cron"), prune)]
    if config["registry.url"]:
        jobs.append(JobSpec("execute", IntervalTrigger(minutes=1), execute))
        jobs.append(JobSpec("scan", cron("scheduler.scan_cron"), scan))
    if notifier.off_reason() is None:
        jobs.append(JobSpec("suggest", cron("scheduler.suggest_cron"), suggest_and_post))
        for team in config.teams:
            if team.channel:
                jobs.append(JobSpec(f"digest:{team.name}",
                                    cron("scheduler.digest_cron", team.timezone),
                                    _digest_job(store, notifier, team.name)))
    return jobs


def _digest_job(store: Store, notifier: Notifier, team: str) -> Callable[[datetime], Any]:
    def digest(now: datetime) -> Any:
        return notifier.digest(store, team=team, now=now, post=True)

    return digest


def lifespan_hook(config: Config, store: Store, *, notifier: Notifier | None = None,
                  **kwargs: Any) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A `recommender.server.build_app` lifespan hook: the scheduler runs while the server
    does (started after the collector's writer, stopped before it). Without ``jobs``, the
    :func:`default_jobs` with ``notifier``."""

    @asynccontextmanager
    async def hook(_app: Any) -> AsyncIterator[None]:
        options = kwargs if "jobs" in kwargs else {
            **kwargs, "jobs": default_jobs(config, store, notifier)}
        scheduler = Scheduler(config, store, **options)
        await anyio.to_thread.run_sync(scheduler.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(scheduler.stop)

    return hook
