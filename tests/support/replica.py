"""A scheduler replica in a process of its own, for the leadership tests and bench/takeover.py.

``python -m tests.support.replica URL OWNER TTL_SECONDS [hang]`` runs a :class:`Scheduler` on
the store at ``URL`` (already migrated, :func:`prepare` done) whose one job, ``tick`` (every
:data:`TICK` seconds), records ``(owner, at)`` in the table ``replica_runs``, its write fenced
by the lease it runs under (as every scheduled run's writes are). With ``hang``, the first run
never returns after recording itself, as a run waiting on a store that does not answer. It runs
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
from datetime import datetime

from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from recommender import config as config_mod
from recommender.leadership import LOCK_NAME
from recommender.scheduler import JobSpec, Scheduler
from recommender.store import Store
from recommender.store.tables import scheduler_lock
from recommender.store.types import UTCDateTime
from recommender.timeutil import utcnow

TICK = 0.2

metadata = MetaData()
RUNS = Table("replica_runs", metadata,
             Column("id", Integer, primary_key=True, autoincrement=True),
             Column("owner", String(128), nullable=False),
             Column("at", UTCDateTime(), nullable=False))


def prepare(store: Store) -> None:
    metadata.create_all(store.engine)


def runs(store: Store) -> list[tuple[str, datetime]]:
    """Every recorded run, oldest first."""
    with store.connect() as conn:
        return [(r.owner, r.at) for r in conn.execute(select(RUNS).order_by(RUNS.c.id))]


def holder(store: Store) -> str | None:
    """Who the lease row names (expired or not)."""
    with store.connect() as conn:
        return conn.execute(select(scheduler_lock.c.owner)
                            .where(scheduler_lock.c.name == LOCK_NAME)).scalar()


def main(url: str, owner: str, ttl: str, hang: str = "") -> None:
    config = config_mod.load(env={}, overrides={"scheduler.lock_ttl": f"{ttl}s"})
    store = Store.from_url(url)

    def tick(now: datetime) -> None:
        # No fence call here: the scheduler fences every write of a scheduled run.
        with store.begin() as conn:
            conn.execute(insert(RUNS).values(owner=owner, at=utcnow()))
        if hang:
            threading.Event().wait()

    scheduler = Scheduler(config, store, owner=owner,
                          jobs=[JobSpec("tick", IntervalTrigger(seconds=TICK), tick)])
    faulthandler.register(signal.SIGUSR1)  # every thread's stack, when a run hangs
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    scheduler.start()
    print("started", flush=True)
    # With a timeout: a signal taken by another thread does not wake a plain wait(), and the
    # handler runs only once the main thread runs again.
    while not stop.wait(0.2):
        pass
    scheduler.stop()
    store.dispose()


if __name__ == "__main__":
    main(*sys.argv[1:5])
