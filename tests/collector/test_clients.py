"""Distinct real clients per manifest, on SQLite and PostgreSQL: the key, the writer's call
(insert, keep the earliest, ignore what is not a use-class pull) and the backfill."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from recommender.collector.bulk import sqlite_time
from recommender.collector.clients import backfill_clients, client_key, record_clients
from recommender.store import Store, open_store
from recommender.store import tables as t

T0 = datetime(2026, 3, 1, tzinfo=UTC)
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def _at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _rows(store: Store) -> dict[tuple[str, str, str], datetime]:
    mc = t.manifest_clients.c
    with store.connect() as conn:
        return {(r[0], r[1], r[2]): r[3] for r in conn.execute(
            select(mc.repository, mc.digest, mc.client, mc.first_seen))}


@pytest.mark.parametrize(("addr", "key"), [
    ("10.0.0.7:51234", "10.0.0.7"),
    ("10.0.0.7", "10.0.0.7"),
    ("[2001:DB8::1]:443", "2001:db8::1"),
    ("2001:db8::1", "2001:db8::1"),
    ("203.0.113.9, 10.0.0.1", "203.0.113.9"),
    ("runner-3.ci.local:40001", "runner-3.ci.local"),
    ("", None),
    (None, None),
    (":5000", None),
])
def test_client_key_is_the_host_without_port(addr: str | None, key: str | None) -> None:
    assert client_key(addr) == key


def test_record_keeps_each_host_once_with_its_earliest_use_pull(store: Store) -> None:
    batch = [
        ("app", D1, "pull", "use", "10.0.0.7:50001", _at(5)),
        ("app", D1, "pull", "use", "10.0.0.7:50002", _at(2)),  # same runner, new port
        ("app", D1, "pull", "use", "10.0.0.8:50003", _at(3)),
        ("app", D1, "pull", "scanner", "10.9.9.9:1", _at(1)),  # not a real client
        ("app", D1, "push", "use", "10.0.0.9:1", _at(1)),  # a push is not use by a client
        ("app", D2, "pull", "use", None, _at(1)),  # no address: not counted
        ("app", None, "pull", "use", "10.0.0.7:1", _at(1)),  # tag-only, unresolved
        ("lib", D1, "pull", "use", "10.0.0.7:1", _at(4)),  # another repository
    ]
    with store.begin() as conn:
        assert record_clients(conn, batch) == 3
    assert _rows(store) == {("app", D1, "10.0.0.7"): _at(2), ("app", D1, "10.0.0.8"): _at(3),
                            ("lib", D1, "10.0.0.7"): _at(4)}
    # A late, out-of-order delivery moves first_seen back; a later pull and a replay do not.
    with store.begin() as conn:
        record_clients(conn, [("app", D1, "pull", "use", "10.0.0.7:9", _at(1)),
                              ("app", D1, "pull", "use", "10.0.0.8:9", _at(30))])
    with store.begin() as conn:
        record_clients(conn, batch)
    assert _rows(store) == {("app", D1, "10.0.0.7"): _at(1), ("app", D1, "10.0.0.8"): _at(3),
                            ("lib", D1, "10.0.0.7"): _at(4)}


def test_record_in_a_failed_transaction_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.begin() as conn:
        record_clients(conn, [("app", D1, "pull", "use", "10.0.0.7:1", _at(1))])
        raise RuntimeError("the writer's transaction fails later")
    assert _rows(store) == {}


def test_sqlite_time_strings_read_back_as_times(sqlite_store: Store) -> None:
    """The SQLite writer's hot path hands stored strings, not datetimes."""
    with sqlite_store.begin() as conn:
        record_clients(conn, [("app", D1, "pull", "use", "10.0.0.7:1", sqlite_time(_at(7))),
                              ("app", D1, "pull", "use", "10.0.0.7:2", sqlite_time(_at(6)))])
    with sqlite_store.begin() as conn:
        record_clients(conn, [("app", D1, "pull", "use", "10.0.0.7:3", _at(5))])
    assert _rows(sqlite_store) == {("app", D1, "10.0.0.7"): _at(5)}


def _event(n: int, hours: float, addr: str | None, *, digest: str | None = D1,
           usage: str = "use", action: str = "pull") -> dict[str, object]:
    return {"time": _at(hours), "received_at": _at(hours), "source": "distribution",
            "source_event_id": f"e{n}", "action": action, "usage": usage,
            "repository": "app", "digest": digest, "client_addr": addr}


def test_backfill_from_raw_events_up_to_until_and_idempotent(store: Store) -> None:
    with store.begin() as conn:
        conn.execute(insert(t.events), [
            _event(1, 10, "10.0.0.7:1"), _event(2, 4, "10.0.0.7:2"), _event(3, 6, "10.0.0.8:1"),
            _event(4, 50, "10.0.0.9:1"), _event(5, 1, "10.0.0.5:1", usage="janitor"),
            _event(6, 1, None), _event(7, 1, "10.0.0.6:1", digest=D2),
            _event(8, 1, "10.0.0.4:1", action="deploy"),
        ])
    with store.begin() as conn:
        backfill_clients(conn, until=_at(24))
    assert _rows(store) == {("app", D1, "10.0.0.7"): _at(4), ("app", D1, "10.0.0.8"): _at(6),
                            ("app", D2, "10.0.0.6"): _at(1)}
    for _ in range(2):
        with store.begin() as conn:
            backfill_clients(conn)
    assert _rows(store) == {("app", D1, "10.0.0.7"): _at(4), ("app", D1, "10.0.0.8"): _at(6),
                            ("app", D2, "10.0.0.6"): _at(1), ("app", D1, "10.0.0.9"): _at(50)}


def test_backfill_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = open_store(url)
    with store.begin() as conn:
        conn.execute(insert(t.events), [_event(1, 3, "10.0.0.7:1"), _event(2, 2, "10.0.0.8:1")])
    store.dispose()
    done = subprocess.run([sys.executable, "-m", "recommender.cli", "--db", url,
                           "backfill-clients"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("2 ")
    store = open_store(url)
    assert _rows(store) == {("app", D1, "10.0.0.7"): _at(3), ("app", D1, "10.0.0.8"): _at(2)}
    store.dispose()


def test_backfill_creates_the_table_on_a_store_that_predates_it(store: Store) -> None:
    with store.begin() as conn:
        t.manifest_clients.drop(conn)
        conn.execute(insert(t.events), [_event(1, 3, "10.0.0.7:1")])
    with store.begin() as conn:
        backfill_clients(conn)
    assert _rows(store) == {("app", D1, "10.0.0.7"): _at(3)}
