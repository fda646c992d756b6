"""The audit chain: appends, tamper detection, one chain under concurrent writers."""

from __future__ import annotations

import io
import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import delete, update

from recommender.audit import AuditLog
from recommender.store import Store, open_store
from recommender.store.tables import audit_log

from .helpers import T0


def _fill(store: Store, n: int = 5) -> AuditLog:
    log = AuditLog(store)
    for i in range(n):
        log.append("test.event", f"user{i}", {"i": i, "bytes": 10 * i}, now=T0 + timedelta(i))
    return log


def test_append_chains_and_exports(store: Store) -> None:
    log = _fill(store)
    entries = list(log.entries())
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:], strict=False))
    assert log.verify().ok and log.verify().rows == 5
    assert log.verify().head == entries[-1].hash
    out = io.StringIO()
    assert log.export(out) == 5
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[2]["data"] == {"i": 2, "bytes": 20} and lines[2]["actor"] == "user2"


def test_append_joins_the_callers_transaction(store: Store) -> None:
    log = _fill(store, 1)
    with pytest.raises(RuntimeError), store.begin() as conn:
        log.append("decision.approve", "U1", {"batch": "b"}, now=T0, conn=conn)
        raise RuntimeError("the decision failed")
    assert [e.kind for e in log.entries()] == ["test.event"]
    assert log.verify().ok


@pytest.mark.parametrize("tamper", ["edit_data", "edit_actor", "remove_middle", "remove_last",
                                    "swap"])
def test_tampering_is_detected(store: Store, tamper: str) -> None:
    log = _fill(store)
    with store.begin() as conn:
        if tamper == "edit_data":
            conn.execute(update(audit_log).where(audit_log.c.seq == 3)
                         .values(data='{"bytes":0,"i":2}'))
        elif tamper == "edit_actor":
            conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(actor="mallory"))
        elif tamper == "remove_middle":
            conn.execute(delete(audit_log).where(audit_log.c.seq == 3))
        elif tamper == "remove_last":
            conn.execute(delete(audit_log).where(audit_log.c.seq == 5))
        else:  # swap the contents of rows 2 and 3, keeping each row's own hash
            rows = {r.seq: r for r in conn.execute(audit_log.select()
                                                   .where(audit_log.c.seq.in_([2, 3])))}
            for a, b in ((2, 3), (3, 2)):
                conn.execute(update(audit_log).where(audit_log.c.seq == a).values(
                    kind=rows[b].kind, actor=rows[b].actor, data=rows[b].data))
    result = log.verify()
    assert not result.ok
    assert result.bad_seq == {"edit_data": 3, "edit_actor": 3, "remove_middle": 3,
                              "remove_last": 5, "swap": 2}[tamper]
    assert result.problem


def test_concurrent_appenders_keep_one_chain(store_url: str) -> None:
    # Separate engines stand for separate processes: each has its own connections.
    stores = [open_store(store_url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def writer(n: int, s: Store) -> None:
        try:
            barrier.wait()
            log = AuditLog(s)
            for i in range(25):
                log.append("race", f"w{n}", {"i": i}, now=T0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n, s)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        result = AuditLog(stores[0]).verify()
        assert result.ok and result.rows == 100
    finally:
        for s in stores:
            s.dispose()


_WRITER = """
import sys
from datetime import UTC, datetime
from recommender.audit import AuditLog
from recommender.store import open_store

store = open_store(sys.argv[1], migrate_schema=False)
log = AuditLog(store)
for i in range(20):
    log.append("race", sys.argv[2], {"i": i}, now=datetime(2026, 3, 2, tzinfo=UTC))
store.dispose()
"""


def test_several_processes_keep_one_chain(store: Store, store_url: str) -> None:
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, store_url, f"p{n}"])
             for n in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    result = AuditLog(store).verify()
    assert result.ok and result.rows == 60
    actors = {e.actor for e in AuditLog(store).entries()}
    assert actors == {"p0", "p1", "p2"}
