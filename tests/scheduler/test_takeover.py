"""Two replicas in two processes on one database: a leader frozen (SIGSTOP, on PostgreSQL) or
killed (SIGKILL, on PostgreSQL and SQLite) loses the lead once its lease lapses, the other takes
over, and a frozen leader that resumes runs nothing until it holds the lease again. The
replicas' job records every run it makes (tests/support/replica.py): the assertions read what
happened.

The only bounds on time are the lease's own: the leader stays frozen for twice the lease, and
the other must have taken over by then.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from recommender.store import Store
from tests.support import replica
from tests.support.blackhole import Blackhole

TTL = 3.0  # seconds (the default is 15)
ROOT = Path(__file__).resolve().parents[2]


class Replica:
    def __init__(self, url: str, owner: str, log: Path, *extra: str) -> None:
        self.owner = owner
        self.log = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.replica", url, owner, str(TTL), *extra],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
def spawn(store: Store, tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    replica.prepare(store)
    url = store.engine.url.render_as_string(hide_password=False)
    started: list[Replica] = []

    def start(owner: str, via: str | None = None, *extra: str) -> Replica:
        started.append(Replica(via or url, owner, tmp_path / f"{owner}.log", *extra))
        return started[-1]

    yield start
    for r in started:
        r.close()


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def _owners(store: Store) -> list[str]:
    return [owner for owner, _ in replica.runs(store)]


def _start_leader_and_follower(store: Store, spawn: Callable[..., Replica],
                               via: str | None = None) -> tuple[Replica, Replica]:
    a = spawn("a", via)
    # Starting a process on a loaded machine is not what is measured: a wide bound.
    _wait(lambda: "a" in _owners(store), 60, "a leads")
    b = spawn("b")
    _wait(lambda: "started" in b.output(), 60, "b started")
    time.sleep(TTL)  # b's elector has had a lease's worth of rounds as a follower
    assert replica.holder(store) == "a"
    return a, b


# Not on SQLite: a leader frozen inside a write transaction (a tick's, a renewal's) keeps the
# file's write lock, and every other writer waits until it resumes. SQLite is for one replica.
@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_a_frozen_leader_is_replaced_and_runs_nothing_when_it_resumes(
        store: Store, spawn: Callable[..., Replica]) -> None:
    a, _b = _start_leader_and_follower(store, spawn)
    assert "b" not in _owners(store)

    a.signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    _wait(lambda: "b" in _owners(store), 2 * TTL, "b takes over while a is frozen")
    time.sleep(max(0.0, frozen_at + 2 * TTL - time.monotonic()))  # frozen for twice the lease
    a.signal(signal.SIGCONT)

    # Both run for two more leases: a has resumed with its jobs still scheduled.
    _b_leads_and_a_ran_nothing_after(store)


def _b_leads_and_a_ran_nothing_after(store: Store) -> None:
    """``b`` runs for two more leases and holds the lease; ``a`` ran nothing from the moment
    ``b`` first ran."""
    seen = len(replica.runs(store))
    _wait(lambda: _owners(store)[seen:].count("b") >= int(2 * TTL / replica.TICK) // 2,
          10 * TTL, "b keeps running")
    runs = replica.runs(store)
    taken_over = min(at for owner, at in runs if owner == "b")
    assert [at for owner, at in runs if owner == "a" and at >= taken_over] == []
    assert replica.holder(store) == "b"


def test_a_killed_leader_is_replaced(store: Store, spawn: Callable[..., Replica]) -> None:
    a, _b = _start_leader_and_follower(store, spawn)
    a.signal(signal.SIGKILL)
    a.proc.wait()
    _wait(lambda: "b" in _owners(store), 2 * TTL, "b takes over from a killed leader")
    assert replica.holder(store) == "b"


@contextlib.contextmanager
def _leader_cut_off(store: Store, spawn: Callable[..., Replica]
                    ) -> Iterator[tuple[Replica, Blackhole, float]]:
    """``a`` leads through a relay, ``b`` follows; the relay is cut and ``b`` has taken over.
    Yields ``a``, the relay and the monotonic time of the cut."""
    url = store.engine.url
    assert url.host is not None and url.port is not None
    with Blackhole(url.host, url.port) as relay:
        via = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        a, _b = _start_leader_and_follower(store, spawn, via)
        relay.cut()
        cut_at = time.monotonic()
        _wait(lambda: "b" in _owners(store), 2 * TTL, "b takes over from a cut-off leader")
        yield a, relay, cut_at


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_a_leader_cut_off_from_the_database_is_replaced_and_runs_nothing_after(
        store: Store, spawn: Callable[..., Replica]) -> None:
    # a reaches PostgreSQL through a relay that then drops everything without closing a
    # connection: no reset, no FIN, and a's kernel sees its packets acknowledged (by the
    # relay's), so TCP keepalives and tcp_user_timeout never fire. Only the lease helps.
    with _leader_cut_off(store, spawn) as (a, relay, cut_at):
        time.sleep(max(0.0, cut_at + 2 * TTL - time.monotonic()))
        relay.restore()  # the network comes back: a's held-back calls arrive late

        _b_leads_and_a_ran_nothing_after(store)
        assert a.proc.poll() is None  # a lives on, as a follower
        relay.cut()
        a.signal(signal.SIGTERM)
        assert a.proc.wait(timeout=30) == 0  # and stops when told, even cut off again


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_a_leader_cut_off_from_the_database_stops_when_told(
        store: Store, spawn: Callable[..., Replica]) -> None:
    # Its job scheduler's thread hangs in a call to the cut-off store; stepping down and
    # stopping must not wait for it.
    with _leader_cut_off(store, spawn) as (a, _relay, _cut_at):
        a.signal(signal.SIGTERM)
        assert a.proc.wait(timeout=30) == 0, a.output()
        assert "lost the scheduler lead" in a.output()


def test_a_replica_whose_job_hangs_stops_when_told(
        store: Store, spawn: Callable[..., Replica]) -> None:
    # A run that never returns (a call to a store that does not answer) must not keep the
    # process from exiting: its writes are fenced, and the next leader runs it again.
    a = spawn("a", None, "hang")
    _wait(lambda: "a" in _owners(store), 60, "a runs its job")
    a.signal(signal.SIGTERM)
    assert a.proc.wait(timeout=30) == 0, a.output()
    assert "lost the scheduler lead" in a.output()
