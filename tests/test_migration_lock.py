"""Two ``tagwarden migrate`` at once on an empty database, as two real processes: both exit 0
and the schema is at the newest migration (without the lock, one fails on a half-created
schema: ``UniqueViolation ... alembic_version`` on PostgreSQL, ``table ... already exists`` on
SQLite)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from recommender.store import open_store
from tests.support import postgres

# Without the lock most PostgreSQL trials fail but not every SQLite one: SQLite gets more
# trials, so that a missing lock cannot pass by luck.
TRIALS = {"postgresql": 5, "sqlite": 10}

# The real CLI, imported before a shared start signal so both processes reach the migration in
# the same instant (Python's start-up time alone would mostly keep them apart).
_RUN_AFTER_SIGNAL = """
import os, sys, time
import alembic.command, sqlalchemy.dialects.postgresql, sqlalchemy.dialects.sqlite
from recommender.cli import main
ready, go = sys.argv[1:3]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
sys.exit(main(sys.argv[3:]))
"""


def migrate_twice_at_once(url: str, tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    signals = tmp_path / uuid.uuid4().hex
    signals.mkdir()
    ready, go = [signals / f"ready-{n}" for n in range(2)], signals / "go"
    env = {"PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", _RUN_AFTER_SIGNAL, str(ready[n]), str(go),
                               "--db", url, "migrate"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for n in range(2)]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready):  # both have imported the CLI
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.mark.timeout(600)
def test_two_migrates_at_once_on_postgresql(postgres_server: str, tmp_path: Path) -> None:
    for trial in range(TRIALS["postgresql"]):
        url = postgres.create_database(postgres_server, f"m_{uuid.uuid4().hex[:12]}")
        for result in migrate_twice_at_once(url, tmp_path):
            assert result.returncode == 0, f"trial {trial}: {result.stderr}"
            assert "is up to date" in result.stdout
        store = open_store(url, migrate_schema=False)
        try:
            store.check_schema()  # at the newest migration
        finally:
            store.dispose()


@pytest.mark.timeout(600)
def test_two_migrates_at_once_on_sqlite(tmp_path: Path) -> None:
    for trial in range(TRIALS["sqlite"]):
        path = tmp_path / f"trial{trial}.db"
        url = f"sqlite:///{path}"
        for result in migrate_twice_at_once(url, tmp_path):
            assert result.returncode == 0, f"trial {trial}: {result.stderr}"
            assert "is up to date" in result.stdout
        store = open_store(url, migrate_schema=False)
        try:
            store.check_schema()
        finally:
            store.dispose()
