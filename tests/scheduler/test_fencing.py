"""A scheduled job's writes are fenced by the lease it runs under (SQLite and PostgreSQL).

A job that started under a valid lease and outlived it (its leader froze, or lost the store for
longer than the lease) commits nothing more, whether the lease lapsed on the leader's own clock
or another replica took it over in the store; the run is recorded ``fenced`` and the next
leader runs it once. A run by hand needs no lease.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import insert, select

from recommender import config as config_mod
from recommender.errors import LeaseLost
from recommender.jobruns import COMPLETED, JobRuns
from recommender.leadership import Lease
from recommender.scheduler import JobSpec, Scheduler
from recommender.store import Store
from recommender.store.tables import job_runs
from tests.support import replica

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TTL = timedelta(seconds=15)


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _write(store: Store, what: str) -> None:
    with store.begin() as conn:
        conn.execute(insert(replica.RUNS).values(owner=what, at=T0))


def _written(store: Store) -> list[str]:
    return [owner for owner, _ in replica.runs(store)]


def _outcomes(store: Store) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return [(r.claimed_by, r.outcome) for r in conn.execute(
            select(job_runs).where(job_runs.c.job == "nightly").order_by(job_runs.c.id))]


def _scheduler(store: Store, owner: str, job: Callable[[datetime], object], clock: Clock,
               mono: Monotonic) -> Scheduler:
    spec = JobSpec("nightly", CronTrigger.from_crontab("0 9 * * *", timezone="UTC"), job)
    return Scheduler(config_mod.load(env={}), store, jobs=[spec], clock=clock, owner=owner,
                     lease=Lease(store, owner, TTL, monotonic=mono))


@pytest.fixture
def prepared(store: Store) -> Store:
    replica.prepare(store)
    return store


def test_a_job_that_outlives_its_lease_commits_nothing_more(prepared: Store) -> None:
    store, mono, clock = prepared, Monotonic(), Clock(T0 - timedelta(minutes=5))

    def job(now: datetime) -> None:
        _write(store, "before")
        mono.now += TTL.total_seconds()  # the leader froze for a whole lease mid-run
        _write(store, "after")

    a = _scheduler(store, "a", job, clock, mono)
    assert a.lease.acquire()
    a.runs.register("nightly", owner="a")
    clock.now = T0 + timedelta(seconds=1)
    with pytest.raises(LeaseLost, match="does not hold the scheduler lease"):
        a.fire("nightly")
    assert _written(store) == ["before"]
    assert _outcomes(store)[-1] == ("a", "fenced")
    assert "fenced" not in COMPLETED  # so the run is still due ...

    # ... and the next leader runs it, once.
    ran: list[datetime] = []
    b = _scheduler(store, "b", ran.append, clock, Monotonic())
    assert b.lease.acquire(at=datetime.now(UTC) + 2 * TTL)  # a's lease has lapsed by then
    clock.now += timedelta(seconds=20)
    b.fire("nightly", "catch-up")
    b.fire("nightly", "catch-up")
    assert ran == [clock.now]
    assert _outcomes(store)[-1] == ("b", "success")


def test_a_takeover_in_the_store_fences_a_leader_whose_clock_still_says_it_leads(
        prepared: Store) -> None:
    store, mono, clock = prepared, Monotonic(), Clock(T0 + timedelta(seconds=1))
    b = Lease(store, "b", TTL)

    def job(now: datetime) -> None:
        _write(store, "before")
        # b takes the row over (as if a's clock ran slow); a's local deadline has not passed.
        assert b.acquire(at=datetime.now(UTC) + 2 * TTL)
        _write(store, "after")

    a = _scheduler(store, "a", job, clock, mono)
    assert a.lease.acquire()
    with pytest.raises(LeaseLost, match="lease in the store"):
        a.fire("nightly")
    assert a.lease.holds()  # the local check alone would have let the write through
    assert _written(store) == ["before"]
    assert _outcomes(store)[-1] == ("a", "fenced")


def test_a_job_that_swallows_the_refusal_is_still_recorded_fenced(prepared: Store) -> None:
    store, mono, clock = prepared, Monotonic(), Clock(T0 + timedelta(seconds=1))

    def job(now: datetime) -> str:
        mono.now += TTL.total_seconds()
        with contextlib.suppress(LeaseLost):  # a job that logs a failed write and goes on
            _write(store, "after")
        return "done"

    a = _scheduler(store, "a", job, clock, mono)
    assert a.lease.acquire()
    with pytest.raises(LeaseLost):
        a.fire("nightly")
    assert _written(store) == []
    assert _outcomes(store)[-1] == ("a", "fenced")


def test_a_run_by_hand_needs_no_lease(prepared: Store) -> None:
    store, clock = prepared, Clock(T0)
    a = _scheduler(store, "cli", lambda now: _write(store, "by hand"), clock, Monotonic())
    assert not a.lease.holds()
    a.run_job("nightly")
    assert _written(store) == ["by hand"]
    assert _outcomes(store)[-1] == ("cli", "success")


def test_writes_outside_a_job_are_not_fenced(prepared: Store) -> None:
    # The collector, the Slack listeners and the CLI write with no fence in force, whatever
    # any lease says.
    store = prepared
    b = Lease(store, "b", TTL)
    assert b.acquire()
    _write(store, "collector")
    assert _written(store) == ["collector"]


def test_a_new_leader_frees_the_runs_of_the_leader_it_replaced(prepared: Store) -> None:
    # A leader frozen in the middle of a run holds that job's claim; the replica that takes
    # over ends it at once instead of waiting scheduler.claim_ttl for it to lapse.
    store, wall = prepared, Clock(datetime.now(UTC))
    spec = JobSpec("nightly", CronTrigger.from_crontab("0 9 * * *", timezone="UTC"),
                   lambda now: None)
    config = config_mod.load(env={})
    a = Scheduler(config, store, jobs=[spec], owner="a", lease=Lease(store, "a", TTL, clock=wall))
    b = Scheduler(config, store, jobs=[spec], owner="b", lease=Lease(store, "b", TTL, clock=wall))
    assert a.lease.acquire()
    frozen = a.runs.claim("nightly", owner="a", trigger="schedule")
    assert frozen is not None
    assert not b.elect()  # b follows a
    wall.now += 2 * TTL  # a's lease lapses (a froze)
    try:
        assert b.elect()
        assert b.is_leader
        with store.connect() as conn:
            row = conn.execute(select(job_runs).where(job_runs.c.id == frozen.id)).one()
        assert (row.outcome, row.error) == ("expired", "a lost the scheduler lease to b")
        assert b.runs.claim("nightly", owner="b", trigger="catch-up") is not None
        assert not a.runs.finish(frozen, outcome="success")  # a, resumed: its claim is gone
        # b's catch-up sweep (started with its lead) registers the job: let it finish with
        # the store before the test closes it.
        deadline = time.monotonic() + 60
        while ("b", "registered") not in _outcomes(store) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        b.stop()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_a_runner_frozen_inside_a_claim_does_not_hold_the_job(store: Store) -> None:
    # a froze after inserting its run and before committing: the unfinished row would make
    # every other claim of the job wait on it until TCP gives up. The session ends after
    # ``idle`` instead, its claim rolled back, and b claims the job.
    idle = timedelta(seconds=1)
    b = JobRuns(store, ttl=timedelta(minutes=2), idle=idle)
    inside, woke, outcome = threading.Event(), threading.Event(), []

    def frozen_claim() -> None:
        try:
            with store.begin(idle=idle) as conn:
                conn.execute(job_runs.insert().values(
                    job="nightly", scheduled_for=T0, trigger="schedule", claimed_by="a",
                    claimed_at=T0, expires_at=T0 + timedelta(days=1), outcome="running"))
                inside.set()
                time.sleep(8)  # frozen, far longer than idle
        except Exception as exc:  # noqa: BLE001 - what the frozen runner finds on waking
            outcome.append(str(exc))
        woke.set()

    thread = threading.Thread(target=frozen_claim, daemon=True)
    thread.start()
    assert inside.wait(30)
    claim = b.claim("nightly", owner="b")
    assert not woke.is_set()  # b did not wait for a to wake up
    assert claim is not None and claim.owner == "b"
    thread.join(60)
    # a's session was ended; nothing of it committed.
    assert len(outcome) == 1 and "idle-in-transaction timeout" in outcome[0]
    assert [(o, out) for o, out in _outcomes(store)] == [("b", "running")]
