"""Scheduled jobs, run by exactly one replica.

Every replica of ``tagwarden serve`` serves HTTP; one of them runs the jobs. Leadership is a
lease in the store that expires (:mod:`recommender.leadership`), the same on PostgreSQL and
SQLite: a small elector thread takes or renews it every ``interval`` (a third of
``scheduler.lock_ttl``); the leader runs an APScheduler 3 ``BackgroundScheduler`` whose jobs
live in the store's database (``SQLAlchemyJobStore``), a follower runs none. A follower takes
over once the leader's lease has lapsed; a leader that cannot renew in time stops starting jobs
before its lease ends (its local deadline), and stops its scheduler at the next round. A job
still running then commits nothing more: each of its writes checks the lease just before it
commits (:mod:`.fencing`).
Gaining and losing the lead is logged (owner and reason) and counted on ``/metrics``.

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
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import URL, Connection

from . import fencing
from .config import Config
from .crontab import cron_trigger
from .errors import LeaseLost
from .fencing import Fence
from .jobruns import Claim, JobRuns
from .leadership import LeadershipMetrics, Lease, replica_id
from .notify import Notifier, load_notifier
from .store import Store
from .timeutil import utcnow

__all__ = [
    "JobSpec",
    "LeaseLost",
    "Scheduler",
    "default_jobs",
    "latest_fire_time",
    "lifespan_hook",
]

log = logging.getLogger(__name__)

JOBS_TABLE = "apscheduler_jobs"
# How soon the scheduler looks at its job store again after the store did not answer.
RETRY_STORE = timedelta(seconds=5)
# How long a job's write transaction may sit idle on PostgreSQL (at least the lease's ttl): a
# frozen leader's row locks go by then, while a job that computes between two statements of
# one transaction (batching thousands of suggestions) is not cut short.
JOB_IDLE = timedelta(minutes=1)


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
    if not scheduler.holds_lease():  # e.g. a frozen leader that has just resumed
        log.warning("job %s not started: %s does not hold the scheduler lease", name, owner)
        return
    scheduler.fire(name)


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


class _DaemonExecutor(BaseExecutor):  # type: ignore[misc]
    """Each run on a daemon thread of its own. A thread pool's threads are joined when the
    process exits, so a run hung on a store that does not answer would keep a replica told to
    stop from ever exiting; a run left behind commits nothing more (its writes are fenced) and
    the next leader runs it again."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def run() -> None:
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as exc:  # noqa: BLE001 - reported as APScheduler's pool does
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)

        threading.Thread(target=run, daemon=True, name=f"job-{job.id}").start()


class _FencedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """The shared job table, read only while this replica holds the lease: a leader resumed
    after a freeze must not take the new leader's due jobs (and move their next run time)."""

    def __init__(self, holds: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._holds = holds

    def get_due_jobs(self, now: datetime) -> list[Any]:
        return super().get_due_jobs(now) if self._holds() else []

    def get_next_run_time(self) -> datetime | None:
        # APScheduler 3 calls this outside its own error handling: a store that is away would
        # end its thread, and with it every later run. Look again shortly instead.
        try:
            return super().get_next_run_time()  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - the store is away; the elector reports it
            log.debug("job store unavailable: %s", exc)
            return utcnow() + RETRY_STORE


class _Attempt:
    """``func()`` on a daemon thread; ``done`` once it has returned or raised (``error``)."""

    def __init__(self, func: Callable[[], Any]) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                func()
            except BaseException as exc:  # noqa: BLE001 - handed to the elector
                self.error = exc
            finally:
                self.done.set()

        threading.Thread(target=run, daemon=True, name="scheduler-lease").start()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Scheduler:
    """``Scheduler(config, store).start()`` in the server's lifespan; ``stop()`` on shutdown.

    ``jobs`` defaults to :func:`default_jobs`; ``clock`` is the jobs' ``now``; ``owner`` names
    this replica (default :func:`~recommender.leadership.replica_id`); ``lease`` defaults to
    a :class:`~recommender.leadership.Lease` of ``scheduler.lock_ttl`` on the database's
    clock; ``interval`` is how often it is taken or renewed (default a third of the ttl);
    ``metrics`` gets the leadership gauge and changes.

    Scheduled runs are fenced by the lease they run under (see :mod:`recommender.leadership`):
    ``fence`` (default: :meth:`fence`, the lease) is called after a run is claimed and before it
    starts, then with the connection before every commit of the job's writes
    (:mod:`recommender.fencing`). A refusal before the start leaves the run undone; one during
    the run rolls that write back and ends the run. Either way the run is recorded as
    ``fenced``, for the leader's catch-up. Runs by hand (:meth:`run_job`) need no lease.
    """

    def __init__(self, config: Config, store: Store, *,
                 jobs: list[JobSpec] | None = None,
                 clock: Callable[[], datetime] = utcnow, owner: str | None = None,
                 lease: Lease | None = None, interval: float | None = None,
                 metrics: LeadershipMetrics | None = None,
                 fence: Fence | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.owner = owner or replica_id()
        self.lease = lease or Lease(store, self.owner, config["scheduler.lock_ttl"])
        self.interval = (interval if interval is not None
                         else max(self.lease.ttl.total_seconds() / 3, 0.05))
        self.metrics = metrics if metrics is not None else LeadershipMetrics()
        self._fence_hook: Fence = fence if fence is not None else self.fence
        self.runs = JobRuns(store, ttl=config["scheduler.claim_ttl"], clock=clock,
                            idle=self.lease.ttl)
        self.catch_up_interval: timedelta = config["scheduler.catch_up_interval"]
        self.jobs: Mapping[str, JobSpec] = {j.name: j for j in (
            jobs if jobs is not None else default_jobs(config, store))}
        self._aps: BackgroundScheduler | None = None
        self._aps_store: Store | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._attempt: _Attempt | None = None
        self._running = 0  # fire() and catch_up() calls in progress
        self._settled = threading.Condition()

    @property
    def is_leader(self) -> bool:
        return self._aps is not None

    def holds_lease(self) -> bool:
        """Whether this replica may run jobs now (its lease's local deadline has not passed)."""
        return self.lease.holds()

    def fence(self, conn: Connection | None = None) -> None:
        """Raise :class:`LeaseLost` unless this replica holds the lease; with ``conn``, check
        it in that write transaction too (:meth:`Lease.fence`). Scheduled runs call it before
        they start and before each commit of their writes."""
        self.lease.fence(conn)

    def start(self) -> Scheduler:
        _ACTIVE[self.owner] = self
        self._stop.clear()
        self.metrics.set(self.owner, False)
        self._thread = threading.Thread(target=self._elect_loop, daemon=True,
                                        name=f"scheduler-{self.owner}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._attempt is not None:  # a renewal in flight would re-take a released lease
            self._attempt.done.wait(self.interval)
        if self._aps is not None:
            self._step_down("stopping")
        # Runs and sweeps in progress get a moment to finish their bookkeeping. A longer one
        # is left to end with the process: its writes are fenced once the lease is released.
        with self._settled:
            self._settled.wait_for(lambda: self._running == 0, timeout=self.interval)
        # Bounded like a renewal: a replica cut off from the store must still stop in time.
        release = _Attempt(self.lease.release)
        if not release.done.wait(self.interval):
            log.warning("scheduler lease release got no answer in time; it expires on its own")
        elif release.error is not None:
            log.warning("scheduler lease release failed: %s", _first_line(release.error))
        _ACTIVE.pop(self.owner, None)

    def _elect_loop(self) -> None:
        while not self._stop.is_set():
            self.elect()
            self._stop.wait(self.interval)

    def elect(self) -> bool:
        """One round: take or renew the lease, start or stop the jobs accordingly."""
        reason = ""
        before = self.lease.holder
        try:
            self._renew()
        except TimeoutError:
            reason = "the store did not answer the renewal in time"
            log.warning("%s: scheduler lease %s", self.owner, reason)
        except Exception as exc:  # noqa: BLE001 - the store is away: lead until the deadline
            reason = f"renewal failed: {_first_line(exc)}"
            log.warning("%s: scheduler lease %s", self.owner, reason)
        leader = self.lease.holds()
        if leader and self._aps is None:
            if before in (None, self.owner):
                self._take_over("lease was free")
            else:
                self._free_runs_of(before)
                self._take_over(f"lease of {before} lapsed")
        elif not leader and self._aps is not None:
            holder = self.lease.holder
            self._step_down(reason or (f"lease held by {holder}" if holder and holder != self.owner
                                       else "lease not renewed in time"))
        return leader

    def _free_runs_of(self, previous: str) -> None:
        """The previous leader's lease lapsed, so its unfinished runs can commit nothing more
        (fencing): end their claims now rather than after ``scheduler.claim_ttl``, and catch-up
        runs them again. Its external acts stay single by their own claims (the executor's item
        leases, the batches' posting claims)."""
        try:
            freed = self.runs.expire_runs_of(
                previous, reason=f"{previous} lost the scheduler lease to {self.owner}")
        except Exception as exc:  # noqa: BLE001 - the claims then lapse on their own
            log.warning("runs of %s not freed: %s", previous, _first_line(exc))
            return
        if freed:
            log.info("freed the runs %s lost with its lease: %s", previous, ", ".join(freed))

    def _renew(self) -> None:
        """``lease.acquire()`` on a thread of its own, waited for ``interval`` at most: a store
        cut off without its TCP connection closing must not keep the elector (and so the step
        down) waiting for TCP to give up. One attempt at a time."""
        attempt = self._attempt
        if attempt is None or attempt.done.is_set():
            attempt = self._attempt = _Attempt(self.lease.acquire)
        if not attempt.done.wait(self.interval):
            raise TimeoutError
        if attempt.error is not None:
            raise attempt.error

    def _take_over(self, reason: str) -> None:
        with self._state_lock:
            # The job store gets its own engine on the same database: APScheduler disposes
            # its engine on shutdown, which must not pull the store's pool from under others.
            own = Store.from_url(_bounded_idle(self.store.engine.url, self.lease.ttl)
                                 .render_as_string(hide_password=False))
            aps = BackgroundScheduler(
                jobstores={"default": _FencedJobStore(self.holds_lease, engine=own.engine,
                                                      tablename=JOBS_TABLE),
                           CATCH_UP_STORE: MemoryJobStore()},
                executors={"default": _DaemonExecutor()},
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
        self.metrics.change(self.owner, gained=True)
        log.info("%s gained the scheduler lead (%s; lease of %s); runs %s", self.owner, reason,
                 _seconds(self.lease.ttl), ", ".join(sorted(known)) or "no jobs")

    def _step_down(self, reason: str) -> None:
        with self._state_lock:
            aps, own = self._aps, self._aps_store
            if aps is None:
                return
            self._aps = self._aps_store = None

        def shutdown() -> None:
            aps.shutdown(wait=False)  # stops it at once, then joins its thread
            if own is not None:
                # After the scheduler thread has ended: it may have reconnected after
                # APScheduler's own dispose.
                own.dispose()

        # The join waits for a call to the job store in flight, which hangs while the store is
        # cut off: bounded like a renewal, and finished in the background. The stopped
        # scheduler starts nothing meanwhile.
        if not _Attempt(shutdown).done.wait(self.interval):
            log.warning("%s: its job scheduler waits on the store to finish stopping",
                        self.owner)
        self.metrics.change(self.owner, gained=False)
        log.warning("%s lost the scheduler lead (%s); stopped its jobs", self.owner, reason)

    def run_job(self, name: str) -> Any:
        """Run one job now, by hand (`tagwarden` commands, tests): claimed like a scheduled
        run; :class:`JobBusy` while another runner holds the job."""
        if self._stop.is_set() and self._aps is None:
            return None
        claim = self.runs.claim(name, owner=self.owner, trigger="manual")
        if claim is None:
            raise self.runs.busy(name)
        return self._execute(claim, fenced=False)

    @contextmanager
    def _in_progress(self) -> Iterator[None]:
        with self._settled:
            self._running += 1
        try:
            yield
        finally:
            with self._settled:
                self._running -= 1
                self._settled.notify_all()

    def fire(self, name: str, trigger: str = "schedule") -> Any:
        """Run ``name`` for the newest of its fire times since its last completed run, unless
        none fell due or another runner holds it or has done it (APScheduler calls this)."""
        with self._in_progress():
            return self._fire(name, trigger)

    def _fire(self, name: str, trigger: str) -> Any:
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
        with self._in_progress():
            return self._catch_up()

    def _catch_up(self) -> list[str]:
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

    def _execute(self, claim: Claim, *, fenced: bool = True) -> Any:
        try:
            if fenced:
                self._fence_hook(None)
        except Exception as exc:  # noqa: BLE001 - any refusal of the fence: do not start
            log.warning("job %s not started: %s", claim.job, exc)
            self.runs.finish(claim, outcome="fenced", error=str(exc)[:2000])
            return None
        now = self.clock()
        log.info("job %s (%s of %s) at %s", claim.job, claim.trigger,
                 claim.scheduled_for.isoformat(), now.isoformat())
        with self.runs.running(claim):
            if not fenced:
                return self.jobs[claim.job].func(now)
            refused: list[BaseException] = []

            def fence(conn: Connection | None) -> None:
                try:
                    self._fence_hook(conn)
                except Exception as exc:
                    refused.append(exc)
                    raise

            with fencing.fenced(fence, idle=max(self.lease.ttl, JOB_IDLE)):
                result = self.jobs[claim.job].func(now)
            if refused:
                # The job caught the refusal and went on; some of its writes did not commit.
                raise refused[0]
            return result


def _bounded_idle(url: URL, limit: timedelta) -> URL:
    """On PostgreSQL, ``url`` with sessions ended after ``limit`` idle in a transaction: a
    leader frozen inside a job-store transaction must not hold its rows from the next one."""
    if url.get_backend_name() != "postgresql":
        return url
    option = f"-c idle_in_transaction_session_timeout={int(limit.total_seconds() * 1000)}"
    options = url.query.get("options")
    joined = " ".join([*(options if isinstance(options, tuple) else [options] if options
                         else []), option])
    return url.update_query_dict({"options": joined})


def _seconds(ttl: timedelta) -> str:
    return f"{ttl.total_seconds():g}s"


def default_jobs(config: Config, store: Store,
                 notifier: Notifier | None = None) -> list[JobSpec]:
    """The production jobs. Each imports its part lazily: the model stack and the Slack
    client load only in the replica that runs them. ``notifier`` (default: the installed one)
    posts the suggestions, the results and the digests."""
    notifier = notifier if notifier is not None else load_notifier(config)

    def cron(key: str, timezone: str = "UTC") -> CronTrigger:
        return cron_trigger(config.get(key), timezone=timezone)

    def execute(now: datetime) -> Any:
        from . import registry
        from .executor import CallLog, Executor

        calls = CallLog()
        client = registry.open(config, recorder=calls)
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

        from . import inventory, registry

        workers = config["registry.concurrency"]

        async def run() -> Any:
            client = registry.open_async(config, max_connections=workers)
            try:
                return await inventory.scan_async(store, client, now=now, concurrency=workers)
            finally:
                await client.aclose()

        return asyncio.run(run())

    def prune(now: datetime) -> Any:
        from .collector.writer import EventWriter

        events = EventWriter.from_config(store, config).prune(now)
        runs = JobRuns(store, ttl=config["scheduler.claim_ttl"]).prune(
            now - config["scheduler.job_runs_retention"])
        return {"events": events, "job_runs": runs}

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
    :func:`default_jobs` with ``notifier``. The leadership series go to the app's ``/metrics``
    (the collector's registry)."""

    @asynccontextmanager
    async def hook(app: Any) -> AsyncIterator[None]:
        options = kwargs if "jobs" in kwargs else {
            **kwargs, "jobs": default_jobs(config, store, notifier)}
        collector = getattr(getattr(app, "state", None), "collector", None)
        if "metrics" not in options and collector is not None:
            options = {**options, "metrics": LeadershipMetrics(collector.metrics.registry)}
        scheduler = Scheduler(config, store, **options)
        await anyio.to_thread.run_sync(scheduler.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(scheduler.stop)

    return hook
