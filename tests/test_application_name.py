"""PostgreSQL connections carry ``tagwarden-<hostname>-<pid>`` as their application name, so an
operator sees in ``pg_stat_activity`` which replica holds which connection (and which lock)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest
from sqlalchemy import text

from recommender.store import Store
from tests.support import postgres


@pytest.fixture
def database(postgres_server: str) -> str:
    return postgres.create_database(postgres_server, f"a_{uuid.uuid4().hex[:12]}")


def seen_name(store: Store) -> str:
    with store.connect() as conn:
        return str(conn.execute(text("SELECT application_name FROM pg_stat_activity "
                                     "WHERE pid = pg_backend_pid()")).scalar_one())


def test_connections_name_the_replica_and_process(database: str) -> None:
    store = Store.from_url(database)
    try:
        assert seen_name(store) == f"tagwarden-{socket.gethostname()}-{os.getpid()}"
    finally:
        store.dispose()


def test_a_name_in_the_url_wins(database: str) -> None:
    store = Store.from_url(f"{database}?application_name=tagwarden-batch")
    try:
        assert seen_name(store) == "tagwarden-batch"
    finally:
        store.dispose()


def test_connections_give_up_on_a_silent_peer(database: str) -> None:
    """libpq's keepalives and tcp_user_timeout are set, so a cut-off database fails calls in
    seconds rather than after the kernel's default of about two hours; the URL may override."""
    store = Store.from_url(f"{database}?keepalives_idle=20")
    try:
        with store.connect() as conn:
            params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        assert params["tcp_user_timeout"] == "30000"
        assert params["keepalives"] == "1"
        assert params["keepalives_count"] == "3"
        assert params["keepalives_idle"] == "20"
    finally:
        store.dispose()
