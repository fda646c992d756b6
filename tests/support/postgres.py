"""A throwaway PostgreSQL cluster for tests and benchmarks (initdb in a temp dir, loopback).

PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user.
``TAGWARDEN_TEST_POSTGRES_URL`` points at an existing server instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from recommender.registry.local import free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _bin(name: str) -> str | None:
    for d in PG_BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    return shutil.which(name)


def available() -> bool:
    return bool(os.environ.get("TAGWARDEN_TEST_POSTGRES_URL")) or (
        _bin("initdb") is not None and _bin("pg_ctl") is not None
    )


class Cluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tagwarden-pg-"))
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, text=True)

    def start(self) -> Cluster:
        data = self.dir / "data"
        self._run(_bin("initdb") or "initdb", "-D", str(data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync")
        return self.resume()

    def pause(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``), keeping its data for :meth:`resume`."""
        self._run(_bin("pg_ctl") or "pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w",
                  "stop")

    def resume(self) -> Cluster:
        """Start the server on its data directory and port; return once it answers."""
        self._run(
            _bin("pg_ctl") or "pg_ctl", "-D", str(self.dir / "data"), "-l",
            str(self.dir / "log"), "-w",
            "-o", f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            "start",
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                psycopg.connect(self.dsn("postgres")).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def dsn(self, db: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db}"

    def stop(self) -> None:
        subprocess.run(
            [*self._as, _bin("pg_ctl") or "pg_ctl", "-D", str(self.dir / "data"), "-m",
             "immediate", "stop"], capture_output=True, check=False,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url``; return its SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        dbname=url.database or "postgres", autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    )
