"""Group commit with the real EventWriter on SQLite and PostgreSQL, on the batcher's thread and
in a writer process (``ProcessWriter``): every guarantee holds for both."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from recommender.collector.batcher import Batcher
from recommender.collector.events import Event
from recommender.collector.metrics import CollectorMetrics
from recommender.collector.writer import EventWriter
from recommender.collector.writer_process import ProcessWriter
from recommender.errors import PayloadError, StoreError
from recommender.store import Store, tables

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DIGEST = "sha256:" + "cd" * 32


def events(request: int, n: int) -> list[Event]:
    return [Event(time=T0 + timedelta(seconds=i), source="distribution",
                  source_event_id=f"r{request}-e{i}", action="pull", usage="use",
                  repository="shop/web", digest=DIGEST, tag="v1", method="GET")
            for i in range(n)]


def stored(store: Store) -> int:
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tables.events)).scalar_one())


def histogram(metrics: CollectorMetrics, name: str) -> tuple[float, float]:
    """(count, sum) of one histogram."""
    values = {s.name: s.value for m in metrics.registry.collect() if m.name == name
              for s in m.samples}
    return values[f"{name}_count"], values[f"{name}_sum"]


@pytest.fixture(params=["thread", "process"])
def sink(request: pytest.FixtureRequest, store: Store) -> EventWriter | ProcessWriter:
    if request.param == "thread":
        return EventWriter(store)
    return ProcessWriter(store.engine.url.render_as_string(hide_password=False))


def make(sink: EventWriter | ProcessWriter, **kwargs: Any) -> Batcher:
    return Batcher(sink, metrics=CollectorMetrics(), clock=lambda: T0, **kwargs)


def test_concurrent_requests_share_one_transaction(
        store: Store, sink: EventWriter | ProcessWriter) -> None:
    batcher = make(sink, max_events=1000, max_delay=0.2)

    async def run() -> list[int]:
        async with batcher:
            return list(await asyncio.gather(*(batcher.submit(events(r, 10)) for r in range(10))))

    assert asyncio.run(run()) == [10] * 10
    assert stored(store) == 100
    assert histogram(batcher.metrics, "tagwarden_batch_requests") == (1, 10)
    assert histogram(batcher.metrics, "tagwarden_batch_events") == (1, 100)


def test_batches_are_bounded_and_requests_never_split(
        store: Store, sink: EventWriter | ProcessWriter) -> None:
    batcher = make(sink, max_events=25, max_delay=0.2)

    async def run() -> list[int]:
        async with batcher:
            small = [batcher.submit(events(r, 10)) for r in range(10)]
            return list(await asyncio.gather(*small, batcher.submit(events(99, 40))))

    assert asyncio.run(run()) == [10] * 10 + [40]
    assert stored(store) == 140
    # 2 requests (20 events) per transaction, then the 40-event request alone, whole
    assert histogram(batcher.metrics, "tagwarden_batch_events") == (6, 140)


def test_a_failed_transaction_fails_every_request_and_stores_nothing(
        store: Store, sink: EventWriter | ProcessWriter) -> None:
    batcher = make(sink, max_delay=0.2)
    with store.begin() as conn:
        conn.execute(text("ALTER TABLE events RENAME TO events_away"))

    async def run() -> list[Any]:
        async with batcher:
            return list(await asyncio.gather(*(batcher.submit(events(r, 5)) for r in range(4)),
                                             return_exceptions=True))

    outcomes = asyncio.run(run())
    with store.begin() as conn:
        conn.execute(text("ALTER TABLE events_away RENAME TO events"))
        assert conn.execute(text("SELECT count(*) FROM rollups")).scalar_one() == 0
    assert all(isinstance(o, StoreError) for o in outcomes)  # HTTP 503: the sender retries
    assert stored(store) == 0


def test_stop_writes_what_is_pending(
        store: Store, sink: EventWriter | ProcessWriter) -> None:
    batcher = make(sink, max_delay=1.0)

    async def run() -> list[int]:
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(events(r, 3))) for r in range(5)]
        await asyncio.sleep(0)  # submitted, still waiting for company
        await batcher.stop()
        return [await t for t in tasks]

    assert asyncio.run(run()) == [3] * 5
    assert stored(store) == 15


def test_refuses_when_overloaded_or_stopped(
        store: Store, sink: EventWriter | ProcessWriter) -> None:
    batcher = make(sink, max_events=10, max_pending=10, max_delay=0.5)

    async def run() -> tuple[Any, Any]:
        async with batcher:
            first = asyncio.create_task(batcher.submit(events(1, 8)))
            await asyncio.sleep(0)
            with pytest.raises(StoreError, match="overloaded"):
                await batcher.submit(events(2, 8))
            done = await first
        with pytest.raises(StoreError, match="not running"):
            await batcher.submit(events(3, 1))
        return done, None

    assert asyncio.run(run())[0] == 8
    assert stored(store) == 8


def test_a_request_the_database_refuses_fails_alone_with_a_payload_error(
        store: Store, sink: EventWriter | ProcessWriter) -> None:
    batcher = make(sink, max_delay=0.2)
    poison = events(7, 2)
    poison[1].size = 2**63  # passes the parser, out of range for the store's BIGINT

    async def run() -> list[Any]:
        async with batcher:
            good = [batcher.submit(events(r, 5)) for r in range(3)]
            return list(await asyncio.gather(*good, batcher.submit(poison),
                                             return_exceptions=True))

    *good, refused = asyncio.run(run())
    assert good == [5, 5, 5]  # they shared the failed transaction, then were written alone
    assert isinstance(refused, PayloadError) and refused.detail["where"] == "store"
    with store.connect() as conn:
        ids = {r[0] for r in conn.execute(select(tables.events.c.source_event_id))}
    assert not any(i.startswith("r7-") for i in ids)  # nothing of the refused request
    assert stored(store) == 15


def test_a_writer_process_that_dies_fails_its_batch_then_is_replaced(store: Store) -> None:
    import os
    import signal

    sink = ProcessWriter(store.engine.url.render_as_string(hide_password=False))
    batcher = make(sink, max_delay=0.05)

    async def run() -> tuple[Any, int]:
        async with batcher:
            await batcher.submit(events(1, 3))
            assert sink.pid is not None
            os.kill(sink.pid, signal.SIGKILL)
            died = (await asyncio.gather(batcher.submit(events(2, 3)),
                                         return_exceptions=True))[0]
            return died, await batcher.submit(events(3, 3))  # a new child took over

    died, after = asyncio.run(run())
    assert isinstance(died, StoreError) and died.detail["temporary"]  # HTTP 503: retried
    assert after == 3
    assert stored(store) == 6


def test_only_a_batch_after_a_quiet_spell_waits_for_company(store: Store) -> None:
    """Under load a batch goes as soon as the writer is free: waiting for company then would
    gather every sender into one batch and leave parsing and writing taking turns."""
    batcher = make(EventWriter(store), max_delay=1.0)

    async def run() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        async with batcher:
            started = loop.time()
            await batcher.submit(events(1, 2))  # after a quiet spell: waits for company
            first = loop.time() - started
            started = loop.time()
            await batcher.submit(events(2, 2))  # right after a write: goes at once
            return first, loop.time() - started

    first, second = asyncio.run(run())
    assert first >= 0.95
    assert second < 0.5
    assert stored(store) == 4
