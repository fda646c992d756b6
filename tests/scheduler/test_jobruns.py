"""Job runs in the store (SQLite and PostgreSQL): one running run per job, lapsed claims taken
over, catch-up of missed fire times once, the fence, and a manual run beside a busy job."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select

from recommender import config as config_mod
from recommender.errors import JobBusy
from recommender.jobruns import JobRuns
from recommender.scheduler import JobSpec, Scheduler, latest_fire_time
from recommender.server import build_app
from recommender.store import Store
from recommender.store.tables import job_runs
from tests.support.live_server import LiveServer

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TTL = timedelta(minutes=2)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _rows(store: Store, job: str) -> list[tuple[str, datetime, str, str]]:
    with store.connect() as conn:
        return [(r.claimed_by, r.scheduled_for, r.trigger, r.outcome) for r in conn.execute(
            select(job_runs).where(job_runs.c.job == job).order_by(job_runs.c.id))]


def test_one_running_run_per_job_until_its_claim_lapses(store: Store) -> None:
    clock = Clock()
    runs = JobRuns(store, ttl=TTL, clock=clock)
    first = runs.claim("suggest", owner="a")
    assert first is not None
    assert runs.claim("suggest", owner="b") is None
    assert runs.claim("scan", owner="b") is not None  # another job is free
    clock.now += timedelta(minutes=1)
    assert runs.renew(first)  # now until T0 + 3 min
    clock.now = T0 + timedelta(minutes=2, seconds=30)
    assert runs.claim("suggest", owner="b") is None
    clock.now = T0 + timedelta(minutes=3, seconds=1)  # a stopped renewing: it vanished
    second = runs.claim("suggest", owner="b")
    assert second is not None and second.owner == "b"
    assert not runs.finish(first, outcome="success")  # too late: recorded as expired
    assert runs.finish(second, outcome="success")
    assert [(o, out) for o, _, _, out in _rows(store, "suggest")] == [("a", "expired"),
                                                                      ("b", "success")]


def test_running_records_success_failure_and_status(store: Store) -> None:
    clock = Clock()
    runs = JobRuns(store, ttl=TTL, clock=clock)
    claim = runs.claim("retrain", owner="a")
    assert claim is not None
    with runs.running(claim):
        clock.now += timedelta(seconds=42)
    failing = runs.claim("retrain", owner="a")
    assert failing is not None
    with pytest.raises(RuntimeError), runs.running(failing):
        clock.now += timedelta(seconds=5)
        raise RuntimeError("no data\nsecond line")
    [status] = runs.status()
    assert status.job == "retrain" and status.failures == 1
    assert status.last_success == T0 + timedelta(seconds=42)
    assert status.last_duration == 5.0
    with store.connect() as conn:
        errors = list(conn.execute(select(job_runs.c.error).order_by(job_runs.c.id)).scalars())
    assert errors == [None, "RuntimeError: no data"]
    assert runs.last_completed("retrain") == T0 + timedelta(seconds=42)


def test_a_claim_for_a_fire_time_already_done_gives_way(store: Store) -> None:
    clock = Clock(T0 + timedelta(seconds=3))
    runs = JobRuns(store, ttl=TTL, clock=clock)
    done = runs.claim("scan", owner="a", scheduled_for=T0, trigger="schedule")
    assert done is not None
    runs.finish(done, outcome="success")
    assert runs.claim("scan", owner="b", scheduled_for=T0, trigger="catch-up",
                      unless_done=True) is None
    later = runs.claim("scan", owner="b", scheduled_for=T0 + timedelta(hours=6),
                       trigger="schedule", unless_done=True)
    assert later is not None


def test_a_manual_claim_waits_then_refuses_with_who_holds_the_job(store: Store) -> None:
    runs = JobRuns(store, ttl=TTL, clock=Clock())
    assert runs.claim("suggest", owner="replica-a", trigger="schedule") is not None
    told: list[str] = []
    slept: list[float] = []
    with pytest.raises(JobBusy) as caught:
        runs.claim_waiting("suggest", owner="cli", wait=timedelta(seconds=3), poll=1.0,
                           on_wait=lambda held: told.append(held.owner), sleep=slept.append)
    assert told == ["replica-a"] and slept == [1.0, 1.0, 1.0]
    assert "running on replica-a" in str(caught.value)
    assert caught.value.detail["held_by"] == "replica-a"


def test_latest_fire_time_is_the_newest_missed_one() -> None:
    cron = CronTrigger.from_crontab("0 9 * * *", timezone="UTC")
    friday = datetime(2026, 3, 6, 9, 0, tzinfo=UTC)
    assert latest_fire_time(cron, friday, friday + timedelta(days=3, minutes=1)) == (
        friday + timedelta(days=3))  # Monday's, not Saturday's or Sunday's
    assert latest_fire_time(cron, friday, friday + timedelta(hours=23)) is None
    every = IntervalTrigger(minutes=1, start_date=T0)
    assert latest_fire_time(every, T0, T0 + timedelta(minutes=90, seconds=5)) == T0 + timedelta(
        minutes=90)


def _scheduler(store: Store, clock: Clock, seen: list[datetime], **kwargs: object) -> Scheduler:
    config = config_mod.load(env={})
    job = JobSpec("suggest", CronTrigger.from_crontab("0 9 * * *", timezone="UTC"), seen.append)
    scheduler = Scheduler(config, store, jobs=[job], clock=clock, owner="a",
                          **kwargs)  # type: ignore[arg-type]
    assert scheduler.lease.acquire()  # scheduled runs are fenced by the lease
    return scheduler


def test_a_fire_runs_the_missed_fire_time_once(store: Store) -> None:
    clock = Clock(T0 - timedelta(days=1, minutes=5))
    seen: list[datetime] = []
    scheduler = _scheduler(store, clock, seen)
    assert scheduler.runs.register("suggest", owner="a")  # first seen the day before, 08:55
    clock.now = T0 + timedelta(days=2, minutes=1)  # three 09:00s passed, unrun
    scheduler.fire("suggest", "catch-up")
    scheduler.fire("suggest", "catch-up")  # the second finds it done
    assert seen == [clock.now]
    assert _rows(store, "suggest")[-1] == ("a", T0 + timedelta(days=2), "catch-up", "success")
    clock.now += timedelta(hours=2)
    scheduler.fire("suggest")
    assert len(seen) == 1  # no fire time since


def test_a_fenced_run_does_not_start_and_stays_due(store: Store) -> None:
    clock = Clock(T0 - timedelta(minutes=5))
    seen: list[datetime] = []

    def fence(conn: object = None) -> None:
        raise RuntimeError("lease lost")

    scheduler = _scheduler(store, clock, seen, fence=fence)
    scheduler.runs.register("suggest", owner="a")
    clock.now = T0 + timedelta(seconds=1)
    scheduler.fire("suggest")
    assert seen == []
    assert _rows(store, "suggest")[-1][3] == "fenced"
    assert scheduler.runs.last_completed("suggest") == T0 - timedelta(minutes=5)


def test_run_job_by_hand_refuses_beside_a_running_run(store: Store) -> None:
    clock = Clock()
    seen: list[datetime] = []
    scheduler = _scheduler(store, clock, seen)
    assert scheduler.runs.claim("suggest", owner="cli-someone") is not None
    with pytest.raises(JobBusy, match="running on cli-someone"):
        scheduler.run_job("suggest")
    assert seen == []


def _series(body: str) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, s.labels.get("job", "")): s.value
            for family in text_string_to_metric_families(body) for s in family.samples
            if s.name.startswith("tagwarden_job_")}


def test_metrics_tell_each_jobs_last_success_duration_and_failures(store: Store,
                                                                    tmp_path: Path) -> None:
    clock = Clock()
    runs = JobRuns(store, ttl=TTL, clock=clock)
    for seconds, fails in ((30, False), (12, True)):
        claim = runs.claim("scan", owner="a")
        assert claim is not None
        with contextlib.suppress(RuntimeError), runs.running(claim):
            clock.now += timedelta(seconds=seconds)
            if fails:
                raise RuntimeError("registry away")
    config = config_mod.load(env={})
    with LiveServer(build_app(config, store)) as server:
        body = httpx.get(f"{server.url}/metrics").text
    assert _series(body) == {
        ("tagwarden_job_last_success_timestamp_seconds", "scan"):
            (T0 + timedelta(seconds=30)).timestamp(),
        ("tagwarden_job_last_duration_seconds", "scan"): 12.0,
        ("tagwarden_job_failures_total", "scan"): 1.0,
    }
    away = Store.from_url(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    with LiveServer(build_app(config, away)) as server:
        answer = httpx.get(f"{server.url}/metrics")
    assert answer.status_code == 200 and _series(answer.text) == {}


def test_prune_keeps_recent_runs_and_each_jobs_newest_completed_run(store: Store) -> None:
    clock = Clock(T0)
    runs = JobRuns(store, ttl=TTL, clock=clock)
    for day in range(40):  # a daily job, each run done the same day
        clock.now = T0 + timedelta(days=day)
        claim = runs.claim("suggest", owner="a", scheduled_for=clock.now)
        assert claim is not None
        runs.finish(claim, outcome="success" if day < 39 else "fenced")
    clock.now = T0
    weekly = runs.claim("retrain", owner="a", scheduled_for=T0)  # one run, long ago
    assert weekly is not None and runs.finish(weekly, outcome="failed")
    clock.now = T0 + timedelta(days=40)
    running = runs.claim("scan", owner="a")  # unfinished: never pruned
    assert running is not None

    deleted = runs.prune(T0 + timedelta(days=30))

    assert deleted == 30  # suggest's runs of days 0-29; retrain's only run stays
    kept = [(job, when.date(), outcome) for job, when, outcome in _all(store)]
    assert ("retrain", T0.date(), "failed") in kept
    assert [d for job, d, _ in kept if job == "suggest"] == [
        (T0 + timedelta(days=n)).date() for n in range(30, 40)]
    assert any(job == "scan" for job, _, _ in kept)
    assert runs.last_completed("suggest") == T0 + timedelta(days=38)  # the fenced one is not
    assert runs.last_completed("retrain") == T0
    # Past every run but the newest completed of each job: those stay.
    runs.finish(running, outcome="success")
    runs.prune(T0 + timedelta(days=400))
    assert sorted((job, outcome) for job, _, outcome in _all(store)) == [
        ("retrain", "failed"), ("scan", "success"), ("suggest", "success")]


def _all(store: Store) -> list[tuple[str, datetime, str]]:
    with store.connect() as conn:
        return [(r.job, r.scheduled_for, r.outcome) for r in conn.execute(
            select(job_runs).order_by(job_runs.c.id))]
