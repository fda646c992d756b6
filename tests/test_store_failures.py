"""The store's failures carry their kind, decided once where the database's error is translated
(``recommender/store/failures.py``): the batcher and the writer process read it."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from recommender.collector.events import Event
from recommender.collector.writer import EventWriter
from recommender.errors import StoreError, StoreFailure
from recommender.store import Store
from recommender.store.failures import classify

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _pull(size: int) -> Event:
    return Event(time=T0, source="distribution", source_event_id="e1", action="pull",
                 usage="use", repository="shop/web", digest="sha256:" + "cd" * 32, tag="v1",
                 method="GET", size=size)


def test_a_value_the_database_refuses_is_refused_data(store: Store) -> None:
    with pytest.raises(StoreError) as caught:
        EventWriter(store).write([_pull(2**63)], now=T0)  # past the store's BIGINT
    assert caught.value.kind is StoreFailure.REFUSED_DATA
    assert caught.value.reason and "\n" not in caught.value.reason


def test_a_store_that_cannot_be_reached_is_unreachable() -> None:
    # Nothing listens on port 1: the connection is refused at once.
    store = Store.from_url("postgresql://tagwarden@127.0.0.1:1/nothing")
    try:
        with pytest.raises(StoreError) as caught:
            EventWriter(store).write([_pull(1)], now=T0)
    finally:
        store.dispose()
    assert caught.value.kind is StoreFailure.UNREACHABLE
    assert caught.value.detail["temporary"] is True


def test_the_whole_chain_counts_and_unreachable_wins() -> None:
    refused = DataError("INSERT", {}, Exception("value out of range"))
    assert classify(refused) == (StoreFailure.REFUSED_DATA, "value out of range")
    assert classify(IntegrityError("INSERT", {}, Exception("dup")))[0] is StoreFailure.OTHER
    # The connection lost while rolling back the refused write: the store is the problem.
    try:
        try:
            raise refused
        except DataError:
            raise OperationalError("ROLLBACK", {}, Exception("server closed")) from None
    except OperationalError as lost:
        lost.__context__ = refused
        assert classify(lost)[0] is StoreFailure.UNREACHABLE


def test_the_kind_survives_a_pipe() -> None:
    sent = StoreError("the store refused the write: x", kind=StoreFailure.REFUSED_DATA,
                      reason="x", temporary=False)
    got = pickle.loads(pickle.dumps(sent))
    assert (got.kind, got.reason, got.message, got.detail) == (
        StoreFailure.REFUSED_DATA, "x", sent.message, {"temporary": False})
