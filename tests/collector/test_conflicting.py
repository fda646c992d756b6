"""An event id reused with other content: counted apart (answer, metric, log), not a duplicate.

A retried delivery repeats an event exactly and is a plain duplicate. The same id with another
time or digest means a broken sender: its event is dropped (the first one is kept), so the
answer must not pretend it was stored like any other.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from recommender.collector.events import Event
from recommender.collector.writer import EventWriter
from recommender.store import Store
from tests.collector.test_app import (  # noqa: F401 - serve_any is a fixture
    AUTH,
    V2,
    count,
    metric,
    pull_event,
    serve_any,
)

OTHER = "sha256:" + "9" * 64


def post(client: Any, *events: dict[str, Any]) -> Any:
    return client.post("/v1/events/distribution", content=json.dumps({"events": list(events)}),
                       headers={**AUTH, "Content-Type": V2})


def test_a_reused_id_is_counted_as_conflicting(serve_any: Any, store: Store,  # noqa: F811
                                               caplog: pytest.LogCaptureFixture) -> None:
    client = serve_any()
    first = pull_event(1)
    assert post(client, first).json() == {"accepted": 1}
    # The same delivery again: a plain duplicate, nothing to say.
    assert post(client, first).json() == {"accepted": 1}
    assert metric(client, "tagwarden_events_conflicting_total") == 0
    # The same id, another digest and time: a sender reusing ids.
    reused = pull_event(1)
    reused["target"]["digest"] = OTHER
    reused["timestamp"] = "2026-01-02T05:00:00.000000000Z"
    with caplog.at_level(logging.WARNING, logger="recommender.collector.app"):
        r = post(client, reused, pull_event(2))
    assert r.status_code == 200
    assert r.json() == {"accepted": 2, "conflicting": 1}
    assert "evt-1" in caplog.text and "conflicting" in caplog.text
    assert "evt-2" not in caplog.text
    assert metric(client, "tagwarden_events_conflicting_total") == 1
    assert metric(client, "tagwarden_events_duplicate_total") == 2
    assert count(store) == 2  # the first evt-1 and evt-2


def test_the_writer_names_the_positions_of_conflicting_events(store: Store) -> None:
    from datetime import UTC, datetime

    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def event(n: int, digest: str | None = "sha256:" + "1" * 64, tag: str | None = "v1",
              at: datetime = t) -> Event:
        return Event(time=at, source="distribution", source_event_id=f"e{n}", action="pull",
                     usage="use", repository="shop/web", registry="r", digest=digest, tag=tag)

    writer = EventWriter(store)
    assert writer.write([event(1), event(2)], now=t).conflicting == []
    # e1 again (same), e2 with another tag, e3 new, e3 repeated in the batch with another time
    result = writer.write([event(1), event(2, tag="v2"), event(3),
                           event(3, at=datetime(2026, 1, 3, tzinfo=UTC))], now=t)
    assert (result.stored, result.duplicates) == (1, 3)
    assert result.conflicting == [1, 3]
    # A deploy that named only a tag gets its digest from the tag history when written: a
    # retry without the digest is the same event.
    assert writer.conflicting([event(1, digest=None)]) == []
