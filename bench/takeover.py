"""Scheduler takeover time on PostgreSQL: a leader frozen, killed or cut off from the database.

Two replicas run in two processes (``tests/support/replica.py``: a scheduler whose job records
each run it makes). Once ``a`` leads and ``b`` follows, ``a`` is frozen (SIGSTOP), killed
(SIGKILL) or cut off (``a`` reaches PostgreSQL through ``tests/support/blackhole.py``, a relay
that then drops everything and closes nothing); the takeover time is from that moment to
``b``'s first recorded run (so it includes ``b`` starting its
scheduler and the first tick, at most 0.2 s). The time until the lease lapses is part of it by
design: up to one ttl after the leader's last renewal.

    .venv/bin/python bench/takeover.py [--ttl 15 --ttl 3] [--trials 3]

Starts a throwaway PostgreSQL cluster (or uses ``TAGWARDEN_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recommender.store import open_store  # noqa: E402
from recommender.timeutil import utcnow  # noqa: E402
from tests.support import postgres, replica  # noqa: E402
from tests.support.blackhole import Blackhole  # noqa: E402

CUT = "network cut"


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"error: not within {timeout:g} s")
        time.sleep(0.02)


def trial(server: str, ttl: float, how: signal.Signals | str, logs: Path) -> float:
    url = postgres.create_database(server, f"b_{uuid.uuid4().hex[:12]}")
    store = open_store(url)
    replica.prepare(store)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    where = store.engine.url
    assert where.host is not None and where.port is not None
    relay = Blackhole(where.host, where.port).__enter__()
    via = where.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)

    def spawn(owner: str, target: str) -> subprocess.Popen[bytes]:
        procs[owner] = subprocess.Popen(
            [sys.executable, "-m", "tests.support.replica", target, owner, str(ttl)],
            cwd=ROOT, stdout=(logs / f"{owner}.log").open("wb"), stderr=subprocess.STDOUT)
        return procs[owner]

    def owners() -> set[str]:
        return {owner for owner, _ in replica.runs(store)}

    try:
        a = spawn("a", via if how == CUT else url)
        _wait(lambda: "a" in owners(), 60)
        spawn("b", url)
        time.sleep(ttl + 3)  # b started and follows for at least a lease
        assert replica.holder(store) == "a"
        signalled = utcnow()
        if isinstance(how, signal.Signals):
            a.send_signal(how)
        else:
            relay.cut()
        _wait(lambda: "b" in owners(), 4 * ttl + 30)
        first = min(at for owner, at in replica.runs(store) if owner == "b")
        return (first - signalled).total_seconds()
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.send_signal(signal.SIGUSR1)
                    time.sleep(1)
                    p.kill()
                    print(f"a replica did not stop within 30 s: {logs}", flush=True)
        relay.close()
        store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttl", type=float, action="append",
                        help="lease ttl in seconds (repeatable; default 15 and 3)")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    ttls = args.ttl or [15.0, 3.0]
    server = os.environ.get("TAGWARDEN_TEST_POSTGRES_URL")
    cluster = None if server else postgres.Cluster().start()
    server = server or cluster.url  # type: ignore[union-attr]
    try:
        print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
        for ttl in ttls:
            for how in (signal.SIGSTOP, signal.SIGKILL, CUT):
                times = [trial(server, ttl, how, Path(tempfile.mkdtemp(prefix="takeover-")))
                         for _ in range(args.trials)]
                name = how.name if isinstance(how, signal.Signals) else how
                print(f"ttl {ttl:g} s, {name}: takeover "
                      + ", ".join(f"{t:.1f}" for t in times)
                      + f" s (median {statistics.median(times):.1f}, max {max(times):.1f})",
                      flush=True)
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
