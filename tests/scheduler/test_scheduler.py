"""Several replicas on one database: exactly one runs the scheduled jobs (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import inspect

from recommender import config as config_mod
from recommender.errors import LeaseLost
from recommender.leadership import Lease
from recommender.scheduler import JobSpec, Scheduler, default_jobs, lifespan_hook
from recommender.server import build_app
from recommender.store import Store
from tests.support.live_server import LiveServer

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


class Runs:
    def __init__(self) -> None:
        self.owners: list[str] = []
        self._lock = threading.Lock()

    def jobs(self, owner: str) -> list[JobSpec]:
        def tick(now: datetime) -> None:
            with self._lock:
                self.owners.append(owner)

        return [JobSpec("tick", IntervalTrigger(seconds=0.2), tick)]

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.owners)


def test_exactly_one_replica_runs_the_jobs_and_another_takes_over(store: Store) -> None:
    config = config_mod.load(env={}, overrides={"scheduler.lock_ttl": "1s"})
    runs = Runs()
    replicas = [Scheduler(config, store, jobs=runs.jobs(name), owner=name, interval=0.1).start()
                for name in ("a", "b")]
    try:
        _wait(lambda: len(runs.snapshot()) >= 4)
        leaders = [r for r in replicas if r.is_leader]
        assert len(leaders) == 1
        leader = leaders[0]
        follower = next(r for r in replicas if r is not leader)
        assert set(runs.snapshot()) == {leader.owner}
        assert "apscheduler_jobs" in inspect(store.engine).get_table_names()

        leader.stop()
        _wait(lambda: follower.is_leader)
        seen = len(runs.snapshot())
        _wait(lambda: runs.snapshot()[seen:].count(follower.owner) >= 3)
        assert leader.owner not in runs.snapshot()[seen:]
    finally:
        for replica in replicas:
            replica.stop()


def test_the_lease_has_one_owner_until_it_expires(store: Store) -> None:
    a = Lease(store, "a", timedelta(seconds=60))
    b = Lease(store, "b", timedelta(seconds=60))
    assert a.acquire(T0)
    assert not b.acquire(T0 + timedelta(seconds=30))
    assert a.acquire(T0 + timedelta(seconds=50))  # renewed to T0 + 110 s
    assert not b.acquire(T0 + timedelta(seconds=100))
    assert b.acquire(T0 + timedelta(seconds=111))  # a stopped renewing
    assert not a.acquire(T0 + timedelta(seconds=112))
    b.release()
    assert a.acquire(T0 + timedelta(seconds=113))


def test_run_job_passes_the_clock(sqlite_store: Store) -> None:
    config = config_mod.load(env={})
    seen: list[datetime] = []
    scheduler = Scheduler(config, sqlite_store, clock=lambda: T0,
                          jobs=[JobSpec("probe", IntervalTrigger(hours=1), seen.append)])
    scheduler.run_job("probe")
    assert seen == [T0]


@pytest.mark.parametrize(("token", "registry", "expected"), [
    (None, None, {"retrain", "prune"}),
    (None, "http://127.0.0.1:5000", {"execute", "retrain", "prune", "scan"}),
    ("xoxb-1", "http://127.0.0.1:5000", {"execute", "retrain", "prune", "scan", "suggest",
                                         "digest:payments"}),
])
def test_default_jobs(sqlite_store: Store, tmp_path: Path, token: str | None,
                      registry: str | None, expected: set[str]) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[[team]]\nname = "payments"\nrepositories = ["payments/*"]\n'
                    'channel = "C0PAY"\ntimezone = "Europe/Berlin"\n', encoding="utf-8")
    config = config_mod.load(path, env={"SLACK_BOT_TOKEN": token} if token else {},
                             overrides={"registry.url": registry})
    jobs = {j.name: j for j in default_jobs(config, sqlite_store)}
    assert set(jobs) == expected
    if token:
        assert str(jobs["digest:payments"].trigger.timezone) == "Europe/Berlin"


def test_the_prune_job_drops_old_raw_events_and_keeps_deploys(sqlite_store: Store) -> None:
    from sqlalchemy import select

    from recommender.collector.events import Event
    from recommender.collector.writer import EventWriter
    from recommender.store.tables import events

    config = config_mod.load(env={})
    old = T0 - timedelta(days=45)
    EventWriter(sqlite_store).write([
        Event(time=old, source="distribution", source_event_id="a", action="pull",
              usage="use", repository="shop/api", digest="sha256:" + "1" * 64),
        Event(time=old, source="deploy", source_event_id="b", action="deploy", usage="use",
              repository="shop/api", digest="sha256:" + "1" * 64, environment="production"),
    ], now=T0)
    jobs = {j.name: j for j in default_jobs(config, sqlite_store)}
    assert jobs["prune"].func(T0) == {"events": 1, "job_runs": 0}
    with sqlite_store.connect() as conn:
        assert [r.action for r in conn.execute(select(events))] == ["deploy"]


def test_the_server_runs_the_scheduler_in_its_lifespan(store: Store) -> None:
    config = config_mod.load(env={}, overrides={"scheduler.lock_ttl": "1s"})
    runs = Runs()
    app = build_app(config, store, lifespans=[
        lifespan_hook(config, store, jobs=runs.jobs("server"), owner="server", interval=0.1)])
    with LiveServer(app):
        _wait(lambda: len(runs.snapshot()) >= 2)
    stopped_at = len(runs.snapshot())
    time.sleep(0.5)
    assert len(runs.snapshot()) == stopped_at  # stopped with the server
    # The lease was released on shutdown.
    assert Lease(store, "next", timedelta(seconds=1)).acquire()


def test_the_lease_fences_its_holder_before_it_expires(store: Store) -> None:
    ticks = [100.0]
    a = Lease(store, "a", timedelta(seconds=10), monotonic=lambda: ticks[0])
    b = Lease(store, "b", timedelta(seconds=10))
    assert a.acquire() and a.holds()
    with store.begin() as conn:
        a.fence(conn)
    ticks[0] += 7.9  # the local deadline is ttl - margin (2 s) after the renewal was sent
    assert a.holds()
    ticks[0] += 0.2
    assert not a.holds()
    with pytest.raises(LeaseLost) as lost:
        a.fence()
    assert lost.value.detail == {"owner": "a", "reason": "not renewed in time"}
    assert not b.acquire()  # the row itself is still a's for the database
    assert a.acquire() and a.holds()  # renewed: a leads again

    # The row says otherwise (a's lease lapsed in the store and b took it): the check in the
    # write transaction refuses, whatever the local deadline says.
    assert b.acquire(datetime.now(UTC) + timedelta(seconds=11))
    with pytest.raises(LeaseLost, match="in the store"), store.begin() as conn:
        a.fence(conn)


def test_leadership_is_logged_and_on_metrics(store: Store,
                                             caplog: pytest.LogCaptureFixture) -> None:
    import httpx

    config = config_mod.load(env={}, overrides={"scheduler.lock_ttl": "1s"})
    runs = Runs()
    app = build_app(config, store, lifespans=[
        lifespan_hook(config, store, jobs=runs.jobs("server"), owner="server", interval=0.1)])
    with caplog.at_level(logging.INFO, logger="recommender"), LiveServer(app) as server:
        _wait(lambda: len(runs.snapshot()) >= 1)
        text = httpx.get(f"{server.url}/metrics").text
    assert 'tagwarden_scheduler_leader{replica="server"} 1.0' in text
    assert ('tagwarden_scheduler_leadership_changes_total{change="gained",replica="server"} 1.0'
            in text)
    messages = [r.getMessage() for r in caplog.records if r.name == "recommender.scheduler"]
    gained = "server gained the scheduler lead (lease was free; lease of 1s)"
    assert any(m.startswith(gained) for m in messages)
    assert "server lost the scheduler lead (stopping); stopped its jobs" in messages
