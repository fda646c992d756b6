"""The fleet's history as ECR's trail: the collector stores it and resolves every tag pull to
the digest the Distribution event named."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from recommender.collector.cloudtrail import parse_cloudtrail
from recommender.collector.writer import EventWriter
from recommender.fleet import FleetSpec, generate
from recommender.fleet.cloudtrail import trail_records
from recommender.store import Store, tables
from recommender.timeutil import parse_time
from recommender.usage import Classifier

from .conftest import Fleet, read_fleet

ACCOUNT, REGION = "123456789012", "eu-west-1"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    spec = FleetSpec(seed=21, repositories=5, days=30, duplicate_rate=0.05,
                     mix={"release": 1, "ci": 1})
    return read_fleet(generate(spec, tmp_path_factory.mktemp("tiny")))


def test_the_trail_of_a_fleet_resolves_its_tags(store: Store, tiny: Fleet) -> None:
    records = list(trail_records(tiny.events, account=ACCOUNT, region=REGION))
    names = Counter(r["eventName"] for r in records)
    assert names["BatchGetImage"] and names["PutImage"]
    events = parse_cloudtrail({"Records": records}, Classifier())
    now = parse_time(tiny.meta["spec"]["start"]) + timedelta(days=31)
    result = EventWriter(store).write(events, now=now)
    assert result.stored == len({e.source_event_id for e in events}) and result.duplicates
    # What the registry's own notifications said each pull fetched.
    fetched = {e["id"] + "#0": e["target"]["digest"] for e in tiny.events
               if e["action"] == "pull" and "/manifests/" in e["target"].get("url", "")}
    by_tag = {r["eventID"] + "#0" for r in records if r["eventName"] == "BatchGetImage"
              and "imageTag" in r["requestParameters"]["imageIds"][0]}
    assert by_tag
    e = tables.events.c
    with store.connect() as conn:
        stored = dict(conn.execute(select(e.source_event_id, e.digest)
                                   .where(e.source_event_id.in_(sorted(by_tag)))).all())
    assert stored == {i: fetched[i] for i in by_tag}


def test_deletes_and_what_a_trail_does_not_hold() -> None:
    from tests.collector.test_distribution import (
        BLOB_PUSH,
        DOCS_PULL,
        MANIFEST_DELETE,
        TAG_DELETE,
    )

    [pull] = DOCS_PULL["events"]
    records = list(trail_records([pull, BLOB_PUSH, MANIFEST_DELETE, TAG_DELETE],
                                 account=ACCOUNT, region=REGION))
    assert [r["eventName"] for r in records] == ["BatchGetImage", "BatchDeleteImage",
                                                 "BatchDeleteImage"]
    events = parse_cloudtrail({"Records": records}, Classifier())
    assert [(e.action, e.digest, e.tag, e.usage, e.source_event_id) for e in events] == [
        # No push places the tag: the pull names the digest it fetched.
        ("pull", pull["target"]["digest"], None, "use", pull["id"] + "#0"),
        ("delete", MANIFEST_DELETE["target"]["digest"], None, "self", "d1#0"),
        ("delete", None, "v1", "self", "d2#0"),
    ]
    assert events[0].time.isoformat() == "2016-03-09T22:44:26+00:00"
    assert events[0].client_addr == "192.168.64.11"
