"""No run lost across a change of leader or a database outage, on real PostgreSQL.

A job fires every ten seconds. The leader is killed one second before a fire time, and the
other replica takes over only once the leader's lease has lapsed, after that fire time: the run
of that fire time happens once, on the new leader, before the next one. The same when
PostgreSQL is stopped across a fire time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select

from recommender import config as config_mod
from recommender.leadership import Lease
from recommender.scheduler import JobSpec, Scheduler
from recommender.store import Store, open_store
from recommender.store.tables import job_runs, scheduler_lock
from tests.conftest import missing
from tests.support import postgres
from tests.support.scheduler_process import LOCK_TTL, PERIOD

ROOT = Path(__file__).resolve().parents[2]


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout} s")
        time.sleep(0.05)


def _next_fire_time(margin: float) -> datetime:
    """The next multiple of PERIOD seconds at least ``margin`` seconds away."""
    now = time.time() + margin
    return datetime.fromtimestamp((int(now) // PERIOD + 1) * PERIOD, UTC)


def _sleep_until(when: datetime) -> None:
    time.sleep(max(0.0, when.timestamp() - time.time()))


def _holder(store: Store) -> str | None:
    with store.connect() as conn:
        return conn.execute(select(scheduler_lock.c.owner)).scalar()


def _runs_of(store: Store, fire: datetime) -> list[tuple[str, str, str]]:
    with store.connect() as conn:
        return [(r.claimed_by, r.trigger, r.outcome) for r in conn.execute(
            select(job_runs).where(job_runs.c.job == "tick",
                                   job_runs.c.scheduled_for == fire))]


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    url = postgres.create_database(postgres_server, f"k_{uuid.uuid4().hex[:12]}")
    open_store(url).dispose()  # migrated
    yield url


@pytest.mark.timeout(180)
def test_leader_killed_one_second_before_a_fire_time(pg_url: str, tmp_path: Path) -> None:
    runs_file = tmp_path / "runs.txt"
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(owner: str) -> None:
        ready = tmp_path / f"ready-{owner}"
        procs[owner] = subprocess.Popen(
            [sys.executable, "-m", "tests.support.scheduler_process", pg_url, owner,
             str(runs_file), str(ready)], cwd=ROOT, env={"PATH": "/usr/bin:/bin"})
        _wait(ready.exists, 60, f"{owner} started")

    store = open_store(pg_url, migrate_schema=False)
    try:
        start("a")
        _wait(lambda: _holder(store) == "a", 30, "a leads")
        start("b")
        # A fire time far enough ahead that both replicas are settled before it.
        fire = _next_fire_time(margin=3)
        _sleep_until(fire - timedelta(seconds=1))
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait()
        killed_at = datetime.now(UTC)
        assert killed_at < fire, "the kill came too late to test anything; rerun"

        def lines() -> list[tuple[str, datetime]]:
            if not runs_file.exists():
                return []
            return [(owner, datetime.fromisoformat(at)) for owner, at in
                    (line.split() for line in runs_file.read_text().splitlines())]

        window = [(o, at) for o, at in lines() if fire <= at]
        assert window == [], "a ran after it was killed"
        _wait(lambda: any(fire <= at for _, at in lines()), PERIOD - 1, "the missed run")
        _sleep_until(fire + timedelta(seconds=PERIOD - 0.5))
        ran = [(o, at) for o, at in lines() if fire <= at < fire + timedelta(seconds=PERIOD)]
        assert [o for o, _ in ran] == ["b"], ran
        # b took over only once a's lease lapsed: after the fire time, so this was catch-up.
        assert ran[0][1] > fire
        assert _runs_of(store, fire) == [("b", "catch-up", "success")]
        assert _holder(store) == "b"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        store.dispose()


@pytest.fixture
def own_cluster() -> Iterator[postgres.Cluster]:
    """A PostgreSQL server of this test alone: it is stopped and started again."""
    if not postgres.PG_BIN_DIRS:
        missing("a PostgreSQL server that this test may stop (initdb/pg_ctl)")
    cluster = postgres.Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(180)
def test_postgresql_stopped_across_a_fire_time(own_cluster: postgres.Cluster) -> None:
    url = postgres.create_database(own_cluster.url, "outage")
    store = open_store(url)
    ran: list[datetime] = []
    lock = threading.Lock()

    def tick(now: datetime) -> None:
        with lock:
            ran.append(now)

    config = config_mod.load(env={}, overrides={"scheduler.catch_up_interval": "1s"})
    job = JobSpec("tick", CronTrigger(second=f"*/{PERIOD}", timezone="UTC"), tick)
    scheduler = Scheduler(config, store, jobs=[job], owner="a", interval=0.5,
                          lease=Lease(store, "a", LOCK_TTL))
    scheduler.start()
    try:
        _wait(lambda: scheduler.is_leader, 30, "a leads")
        fire = _next_fire_time(margin=4)
        _sleep_until(fire - timedelta(seconds=2))
        own_cluster.pause()
        _sleep_until(fire + timedelta(seconds=2))
        own_cluster.resume()
        _wait(lambda: any(fire <= at for at in ran), PERIOD - 3, "the missed run")
        _sleep_until(fire + timedelta(seconds=PERIOD - 0.5))
        with lock:
            window = [at for at in ran if fire <= at < fire + timedelta(seconds=PERIOD)]
        assert len(window) == 1 and window[0] > fire + timedelta(seconds=2)
        # Once, whichever comes first after the outage: APScheduler's late fire (within its
        # misfire grace) or the catch-up sweep; the other then finds the fire time done.
        (run,) = _runs_of(store, fire)
        assert run in {("a", "catch-up", "success"), ("a", "schedule", "success")}
    finally:
        scheduler.stop()
        store.dispose()
