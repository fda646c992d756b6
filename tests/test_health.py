"""``/livez`` and ``/readyz`` served for real: with the database gone the process stays live
(no restart) but is not ready (out of the Service's endpoints), with the reason in JSON."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from recommender.config import Config, load
from recommender.registry.local import free_port
from recommender.server import build_app
from recommender.store import Store, open_store
from tests.support import postgres
from tests.support.live_server import LiveServer


def config() -> Config:
    return load(env={}, overrides={"collector.token": "t"})


def probe(server: LiveServer) -> tuple[httpx.Response, httpx.Response]:
    return httpx.get(f"{server.url}/livez"), httpx.get(f"{server.url}/readyz", timeout=30)


def test_database_dropped_under_a_running_server(postgres_server: str) -> None:
    url = postgres.create_database(postgres_server, f"h_{uuid.uuid4().hex[:12]}")
    store = open_store(url)
    with LiveServer(build_app(config(), store)) as server:
        live, ready = probe(server)
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "store": "postgresql"}

        u = make_url(postgres_server)
        with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname="postgres",
                             autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{make_url(url).database}" WITH (FORCE)')

        live, ready = probe(server)
        assert live.status_code == 200
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert "does not exist" in ready.json()["error"]
    store.dispose()


def test_database_server_stopped() -> None:
    port = free_port()  # nothing listens there
    store = Store.from_url(f"postgresql+psycopg://postgres@127.0.0.1:{port}/tagwarden")
    with LiveServer(build_app(config(), store)) as server:
        live, ready = probe(server)
        assert live.status_code == 200
        assert ready.status_code == 503
        assert "refused" in ready.json()["error"]
    store.dispose()


def test_sqlite_schema_behind_is_not_ready_until_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url, migrate_schema=False)
    with LiveServer(build_app(config(), store)) as server:
        live, ready = probe(server)
        assert live.status_code == 200
        assert ready.status_code == 503
        assert "run `tagwarden migrate`" in ready.json()["error"]
        store.migrate()
        assert probe(server)[1].status_code == 200
    store.dispose()


def test_sqlite_file_out_of_reach(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    with LiveServer(build_app(config(), store)) as server:
        live, ready = probe(server)
        assert live.status_code == 200
        assert ready.status_code == 503
        assert ready.json()["error"].endswith("unable to open database file")
    store.dispose()


def test_a_database_that_never_answers_gets_one_check_at_a_time() -> None:
    """A server that accepts the connection and says nothing (a frozen or cut-off database):
    the first check waits, the probes after it are answered at once instead of each taking
    another thread."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads or writes
    port = silent.getsockname()[1]
    store = Store.from_url(f"postgresql+psycopg://postgres@127.0.0.1:{port}/tagwarden")
    try:
        with LiveServer(build_app(config(), store)) as server:
            with pytest.raises(httpx.ReadTimeout):
                httpx.get(f"{server.url}/readyz", timeout=1)
            started = time.monotonic()
            again = httpx.get(f"{server.url}/readyz", timeout=5)
            assert time.monotonic() - started < 2
            assert again.status_code == 503
            assert "has not answered yet" in again.json()["error"]
            assert httpx.get(f"{server.url}/livez").status_code == 200
            silent.close()  # the stuck check fails at last; the next one runs again
            deadline = time.monotonic() + 10
            while "has not answered yet" in httpx.get(f"{server.url}/readyz",
                                                      timeout=5).json()["error"]:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        silent.close()
        store.dispose()
