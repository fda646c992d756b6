"""ECR's CloudTrail records stored: tags resolved at each pull's instant, the CLI on a trail's
``.gz`` file, the HTTP endpoint; on SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from recommender.cli import main
from recommender.collector.cloudtrail import parse_cloudtrail
from recommender.collector.writer import EventWriter
from recommender.store import Store, open_store, tables
from recommender.usage import Classifier

from .test_app import AUTH, count, metric, serve, serve_any, serve_lite  # noqa: F401 - fixtures
from .test_cloudtrail import (
    IMAGE_PUSHED,
    POLICY_EXPIRY,
    PULL_BY_TAG,
    TAGWARDEN_ROLE,
    A,
    B,
    pull,
    put,
    record,
    via_eventbridge,
)

NOW = datetime(2026, 3, 5, tzinfo=UTC)

# v1 is pushed on A, pulled, moved to B, pulled again; "old" has no history at all.
STORY = [
    put("p-1", "2026-03-01T09:00:00Z", tag="v1", digest=A),
    pull("g-1", "2026-03-01T10:00:00Z"),
    put("p-2", "2026-03-01T11:00:00Z", tag="v1", digest=B),
    pull("g-2", "2026-03-01T12:00:00Z"),
    pull("g-3", "2026-03-01T12:30:00Z", tag="old"),
]


def pulls(store: Store) -> dict[str, tuple[str | None, str | None]]:
    e = tables.events.c
    with store.connect() as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute(
            select(e.source_event_id, e.digest, e.tag).where(e.action == "pull"))}


def use_rollups(store: Store) -> dict[tuple[str, str], int]:
    r = tables.rollups.c
    with store.connect() as conn:
        return {(row[0], row[1]): row[2] for row in conn.execute(
            select(r.digest, r.tag, r["count"]).where(r.action == "pull", r.usage == "use"))}


def test_a_tag_resolves_to_the_digest_it_named_at_each_pull(store: Store) -> None:
    writer = EventWriter(store)
    # In one batch, shuffled: the pushes are placed at their own time all the same.
    events = parse_cloudtrail({"Records": [STORY[3], STORY[1], STORY[4], STORY[2], STORY[0]]},
                              Classifier())
    assert writer.write(events, now=NOW).stored == 5
    assert pulls(store) == {"g-1#0": (A, "v1"), "g-2#0": (B, "v1"), "g-3#0": (None, "old")}
    # The pull of a tag the history cannot place counts against the tag alone.
    assert use_rollups(store) == {(A, "v1"): 1, (B, "v1"): 1, ("", "old"): 1}


def test_a_pull_written_before_its_push_arrives_stays_on_the_tag(store: Store) -> None:
    writer = EventWriter(store)
    writer.write(parse_cloudtrail(STORY[1], Classifier()), now=NOW)
    writer.write(parse_cloudtrail(STORY[0], Classifier()), now=NOW)
    assert pulls(store) == {"g-1#0": (None, "v1")}
    assert use_rollups(store) == {("", "v1"): 1}


def test_image_actions_and_lifecycle_expiry_keep_the_history(store: Store) -> None:
    writer = EventWriter(store)
    writer.write(parse_cloudtrail([IMAGE_PUSHED, PULL_BY_TAG], Classifier()), now=NOW)
    writer.write(parse_cloudtrail(POLICY_EXPIRY, Classifier()), now=NOW)
    assert pulls(store) == {PULL_BY_TAG["eventID"] + "#0": (A, "v1")}
    th, m = tables.tag_history.c, tables.manifests.c
    with store.connect() as conn:
        [(digest, valid_to)] = conn.execute(select(th.digest, th.valid_to)).all()
        deleted = conn.execute(select(m.deleted_at).where(m.digest == A)).scalar_one()
    assert digest == A and valid_to == datetime(2026, 3, 2, 20, 22, 12, tzinfo=UTC)
    assert deleted == valid_to


# --- tagwarden ingest cloudtrail ----------------------------------------------------------------


def test_a_trail_s_gz_files_and_record_lines(store_url: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    s3 = {"eventVersion": "1.09", "eventSource": "s3.amazonaws.com", "eventName": "PutObject",
          "eventTime": "2026-03-01T10:00:00Z", "eventID": "s3-1"}
    # A trail writes one JSON document per file, on one line, gzipped.
    trail = tmp_path / "123456789012_CloudTrail_eu-west-1_20260301T1000Z_a1b2.json.gz"
    trail.write_bytes(gzip.compress(orjson.dumps({"Records": [s3, *STORY]})))
    lines = tmp_path / "records.jsonl"
    lines.write_bytes(b"\n".join([
        orjson.dumps(via_eventbridge(STORY[1])),  # again, from EventBridge: a duplicate
        orjson.dumps({**PULL_BY_TAG, "eventSource": "s3.amazonaws.com"}),  # line 2: refused
        orjson.dumps(pull("g-4", "2026-03-02T08:00:00Z", tag=None, digest=A)),
        b"{not json",  # line 4
    ]) + b"\n")
    code = main(["--db", store_url, "ingest", "cloudtrail", str(trail), str(lines)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and code == 1
    assert out.strip() == ("read 7, stored 6, duplicates 1, rejected 2 "
                           f"(lines {lines}:2, {lines}:4)")
    assert "is not ECR" in err
    store = open_store(store_url)
    try:
        assert pulls(store) == {"g-1#0": (A, "v1"), "g-2#0": (B, "v1"), "g-3#0": (None, "old"),
                                "g-4#0": (A, None)}
    finally:
        store.dispose()


# --- POST /v1/events/cloudtrail -------------------------------------------------------------------


def test_eventbridge_deliveries_are_stored(serve_any: Any,  # noqa: F811 - the fixture
                                           store: Store) -> None:
    client = serve_any()
    one = client.post("/v1/events/cloudtrail", json=via_eventbridge(STORY[0]), headers=AUTH)
    many = client.post("/v1/events/cloudtrail",
                       json=[via_eventbridge(r) for r in STORY[1:]], headers=AUTH)
    trail = client.post("/v1/events/cloudtrail", json={"Records": STORY}, headers=AUTH)
    assert [r.json() for r in (one, many, trail)] == [{"accepted": 1}, {"accepted": 4},
                                                      {"accepted": 5}]
    assert count(store) == 5  # the trail's copies were duplicates
    assert pulls(store) == {"g-1#0": (A, "v1"), "g-2#0": (B, "v1"), "g-3#0": (None, "old")}
    assert metric(client, "tagwarden_events_received_total", source="cloudtrail",
                  usage="use") == 10


def test_json_lines_of_records(serve: Any, store: Store) -> None:  # noqa: F811 - the fixture
    client = serve()
    body = b"\n".join(orjson.dumps(r) for r in STORY[:2]) + b"\n"
    r = client.post("/v1/events/cloudtrail", content=body,
                    headers={**AUTH, "Content-Type": "application/x-ndjson"})
    assert r.json() == {"accepted": 2}
    assert pulls(store) == {"g-1#0": (A, "v1")}


BAD = [
    pytest.param(via_eventbridge({**STORY[1], "eventSource": "s3.amazonaws.com"}),
                 "detail.eventSource", id="wrong-event-source"),
    pytest.param({**via_eventbridge(STORY[1]), "source": "aws.s3"}, "source",
                 id="wrong-eventbridge-source"),
    pytest.param([via_eventbridge(STORY[0]), via_eventbridge(
        {**STORY[1], "requestParameters": {"imageIds": [{"imageTag": "v1"}]}})],
        "[1].detail.requestParameters.repositoryName", id="missing-repository"),
    pytest.param({"Records": [STORY[0], {**STORY[1], "eventID": None}]}, "Records[1].eventID",
                 id="missing-event-id"),
    pytest.param(record("PutImage", "p-9", "2026-03-01T09:00:00Z",
                        {"repositoryName": "team/app", "imageTag": "v9"}),
                 "responseElements.image.imageId.imageDigest", id="push-without-digest"),
    pytest.param({"events": []}, None, id="not-cloudtrail"),
]


@pytest.mark.parametrize(("doc", "where"), BAD)
def test_bad_input_is_400_and_stores_nothing(serve_lite: Any,  # noqa: F811 - the fixture
                                            sqlite_store: Store, doc: Any,
                                            where: str | None) -> None:
    client = serve_lite()
    r = client.post("/v1/events/cloudtrail", content=json.dumps(doc), headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"] and r.json().get("where") == where
    assert count(sqlite_store) == 0 and count(sqlite_store, tables.tag_history) == 0
    assert metric(client, "tagwarden_requests_rejected_total", source="cloudtrail",
                  reason="payload") == 1


def test_tagwarden_s_own_role_is_self_by_setting(serve: Any, store: Store) -> None:  # noqa: F811
    client = serve(**{"usage.self_actors": [r":assumed-role/tagwarden/"]})
    mine = pull("g-5", "2026-03-01T10:00:00Z", arn=TAGWARDEN_ROLE, agent="Boto3/1.35.0")
    theirs = pull("g-6", "2026-03-01T10:00:00Z", agent="Boto3/1.35.0")
    r = client.post("/v1/events/cloudtrail", json={"Records": [mine, theirs]}, headers=AUTH)
    assert r.json() == {"accepted": 2}
    e = tables.events.c
    with store.connect() as conn:
        usage = dict(conn.execute(select(e.source_event_id, e.usage)).all())
    assert usage == {"g-5#0": "self", "g-6#0": "use"}
