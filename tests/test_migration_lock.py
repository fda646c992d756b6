"""Two ``tagwarden migrate`` at once on an empty database, as two real processes: both exit 0
and the schema is at the newest migration (without the lock, one fails on a half-created
schema: ``UniqueViolation ... alembic_version`` on PostgreSQL, ``table ... already exists`` on
SQLite)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from recommender.store import open_store
from tests.support import postgres
from tests.support.at_once import cli_twice_at_once

# Without the lock most PostgreSQL trials fail but not every SQLite one: SQLite gets more
# trials, so that a missing lock cannot pass by luck.
TRIALS = {"postgresql": 5, "sqlite": 10}

def migrate_twice_at_once(url: str, tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    signals = tmp_path / uuid.uuid4().hex
    signals.mkdir()
    return cli_twice_at_once(["--db", url, "migrate"], signals, preload=(
        "alembic.command", "sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.sqlite"))


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
