"""One replica's scheduler as a process of its own, for takeover tests:
``python -m tests.support.scheduler_process URL OWNER RUNS_FILE READY_FILE``.

It runs one job, ``tick``, every ten seconds of the minute (:data:`PERIOD`), which appends
"OWNER ISO-TIME" to RUNS_FILE; leadership is a :data:`LOCK_TTL` lease renewed
every half second (a killed leader is replaced once the lease lapses). READY_FILE is created
once the scheduler has started. It runs until killed.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

from recommender import config as config_mod
from recommender.leadership import Lease
from recommender.scheduler import JobSpec, Scheduler
from recommender.store import open_store

PERIOD = 10  # seconds between two fire times of ``tick``
LOCK_TTL = timedelta(seconds=5)


def main(url: str, owner: str, runs_file: str, ready_file: str) -> None:
    config = config_mod.load(env={}, overrides={"scheduler.catch_up_interval": "1s"})
    store = open_store(url, migrate_schema=False)

    def tick(now: datetime) -> None:
        fd = os.open(runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{owner} {now.isoformat()}\n".encode())
        finally:
            os.close(fd)

    job = JobSpec("tick", CronTrigger(second=f"*/{PERIOD}", timezone="UTC"), tick)
    Scheduler(config, store, jobs=[job], owner=owner, lease=Lease(store, owner, LOCK_TTL),
              interval=0.5).start()
    open(ready_file, "w").close()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(*sys.argv[1:5])
