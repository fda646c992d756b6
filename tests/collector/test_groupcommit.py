"""GroupCommitWriter: batches grouped per transaction, counted once durable (SQLite and
PostgreSQL, the ``store`` fixture)."""

from __future__ import annotations

import itertools
import threading
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from recommender.collector.events import Event, WriteResult
from recommender.collector.groupcommit import GroupCommitWriter
from recommender.collector.writer import EventWriter
from recommender.errors import StoreError
from recommender.store import Store
from recommender.store.tables import events, manifest_clients, rollups

from .test_writer import D1, NOW, T0, ev, h


def stored(store: Store) -> int:
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def batch(n: int, prefix: str) -> list[Event]:
    return [ev("pull", digest=D1, tag="v1", at=h(i % 3), eid=f"{prefix}{i}") for i in range(n)]


def test_batches_commit_in_groups_counted_once_committed(store: Store) -> None:
    seen: list[tuple[int, int]] = []  # (events the transaction held, events in the store)

    def committed(result: WriteResult) -> None:
        seen.append((result.stored, stored(store)))  # from another connection: durable

    # The clock stands still and the writer waits long for company: only size commits.
    with GroupCommitWriter(EventWriter(store), on_commit=committed, max_events=25, idle=30,
                           clock=lambda: 0.0) as writer:
        for k in range(5):
            writer.submit(batch(10, f"b{k}-"), now=NOW)
    assert seen == [(30, 30), (20, 50)]  # 3 batches reached 25; close committed the rest
    with store.connect() as conn:
        assert conn.execute(select(func.sum(rollups.c["count"]))).scalar_one() == 50


def test_flush_commits_what_was_written_and_the_caller_goes_on(store: Store) -> None:
    seen: list[tuple[int, int]] = []

    def committed(result: WriteResult) -> None:
        seen.append((result.stored, stored(store)))

    with GroupCommitWriter(EventWriter(store), on_commit=committed, max_events=10**6, idle=30,
                           clock=lambda: 0.0) as writer:
        writer.flush()  # nothing written yet: no empty transaction
        writer.submit(batch(10, "a-"), now=NOW)
        writer.submit(batch(10, "b-"), now=NOW)
        writer.flush()
        writer.flush()  # nothing written since
        writer.submit(batch(10, "c-"), now=NOW)
    assert seen == [(20, 20), (10, 30)]


def test_an_old_transaction_commits(store: Store) -> None:
    seen: list[int] = []
    ticks = itertools.count()  # every reading of the clock is a second later
    with GroupCommitWriter(EventWriter(store), on_commit=lambda r: seen.append(r.stored),
                           max_events=10**6, max_seconds=1, idle=30,
                           clock=lambda: float(next(ticks))) as writer:
        for k in range(3):
            writer.submit(batch(4, f"b{k}-"), now=NOW)
    assert seen == [4, 4, 4]


def test_a_quiet_producer_does_not_hold_the_write_lock(store: Store) -> None:
    """stdin may pause for minutes: the open transaction commits after ``idle`` and another
    writer (the collector server on the same SQLite file) is not kept waiting."""
    first = threading.Event()
    seen: list[int] = []

    def committed(result: WriteResult) -> None:
        seen.append(result.stored)
        first.set()

    with GroupCommitWriter(EventWriter(store), on_commit=committed, idle=0.05) as writer:
        writer.submit(batch(10, "a"), now=NOW)
        assert first.wait(30), "the batch was not committed while the producer paused"
        assert stored(store) == 10
        other = EventWriter(store).write(batch(5, "other"), now=NOW)
        assert other.stored == 5
        writer.submit(batch(10, "b"), now=NOW)
    assert seen == [10, 10] and stored(store) == 25


def test_a_failure_rolls_back_its_group_counts_nothing_and_stops(store: Store) -> None:
    seen: list[WriteResult] = []
    bad = batch(3, "bad")
    bad[1].time = datetime(2026, 3, 1)  # naive: the store refuses it
    writer = GroupCommitWriter(EventWriter(store), on_commit=seen.append, idle=30,
                               clock=lambda: 0.0)
    for b in (batch(10, "a"), batch(10, "b"), bad):
        writer.submit(b, now=NOW)
    with pytest.raises(Exception, match="naive"):
        try:
            writer.submit(batch(10, "after"), now=NOW)  # raises if the failure came first
        finally:
            writer.close()
    assert seen == []  # nothing was committed, so nothing is counted
    assert stored(store) == 0  # the two good batches of the group were rolled back too


def test_a_group_merges_rollups_and_clients_like_separate_commits(store: Store) -> None:
    """The same (day, manifest, tag, action, usage) and the same client in three batches of
    one transaction: one rollup row with the summed count and the widest first/last, and the
    client's earliest pull, as three separate commits would leave them."""
    def pulls(prefix: str, hours: list[float], addr: str) -> list[Event]:
        out = [ev("pull", digest=D1, tag="v1", at=h(x), eid=f"{prefix}{i}")
               for i, x in enumerate(hours)]
        for e in out:
            e.client_addr = addr
        return out

    batches = [pulls("a", [5, 6], "10.1.1.1:4000"), pulls("b", [2, 7], "10.1.1.1:5000"),
               pulls("c", [9], "10.2.2.2:4000")]
    seen: list[int] = []
    with GroupCommitWriter(EventWriter(store), on_commit=lambda r: seen.append(r.stored),
                           idle=30, clock=lambda: 0.0) as writer:
        for b in batches:
            writer.submit(b, now=NOW)
    assert seen == [5]
    with store.connect() as conn:
        got = conn.execute(select(rollups.c["count"], rollups.c.first_at, rollups.c.last_at)
                           ).all()
        clients = dict(conn.execute(select(manifest_clients.c.client,
                                           manifest_clients.c.first_seen)).all())
    assert [tuple(r) for r in got] == [(5, T0 + h(2), T0 + h(9))]
    assert clients == {"10.1.1.1": T0 + h(2), "10.2.2.2": T0 + h(9)}


def test_a_store_that_cannot_be_opened_fails_the_next_submit_instead_of_hanging(
    tmp_path: Path,
) -> None:
    """The transaction cannot even begin (no such directory): the batch taken off the queue
    must still release the caller waiting to hand over the next one."""
    seen: list[WriteResult] = []
    writer = GroupCommitWriter(
        EventWriter(Store.from_url(f"sqlite:///{tmp_path}/no/such/dir/store.db")),
        on_commit=seen.append, idle=30)
    writer.submit(batch(3, "a"), now=NOW)
    raised: list[BaseException] = []

    def hand_over() -> None:  # waits for the first batch to be written, then must raise
        try:
            writer.submit(batch(3, "b"), now=NOW)
        except BaseException as exc:  # noqa: BLE001 - checked below
            raised.append(exc)

    caller = threading.Thread(target=hand_over, daemon=True)
    caller.start()
    caller.join(30)
    assert not caller.is_alive(), "submit waited for ever on a batch the writer never released"
    assert len(raised) == 1 and isinstance(raised[0], StoreError)
    assert "unable to open" in str(raised[0])
    with pytest.raises(StoreError, match="unable to open"):
        writer.close()
    assert seen == []
