"""Harbor webhooks: the Default payload and CloudEvents, as Harbor 2.x documents them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from recommender.collector.harbor import parse_webhook
from recommender.errors import PayloadError
from recommender.usage import Classifier

D = "sha256:" + "4f" * 32

# Default payload (Harbor docs "Webhook Notifications", PULL_ARTIFACT by tag).
DEFAULT_PULL = {
    "type": "PULL_ARTIFACT", "occur_at": 1680502359, "operator": "admin",
    "event_data": {
        "resources": [{"digest": D, "tag": "1.25",
                       "resource_url": "harbor.example.com/library/nginx:1.25"}],
        "repository": {"date_created": 1677053165, "name": "nginx", "namespace": "library",
                       "repo_full_name": "library/nginx", "repo_type": "public"},
    },
}
# CloudEvents (Harbor >= 2.8), a scanner robot pulling by digest: the digest is in ``tag``.
CLOUD_SCAN_PULL = {
    "specversion": "1.0", "id": "4b2f89a6-548d-4c12-9993-a1f5790b97d2",
    "requestid": "7a5e8e40-1d53-4c52-8cc5-b2d4d0f0c6b3", "source": "/projects/1/webhook/policies/1",
    "type": "harbor.artifact.pulled", "datacontenttype": "application/json",
    "time": "2023-03-06T06:08:43Z",
    "data": {
        "resources": [{"digest": D, "tag": D,
                       "resource_url": f"harbor.example.com/library/nginx@{D}"}],
        "repository": {"date_created": 1677053165, "name": "nginx", "namespace": "library",
                       "repo_full_name": "library/nginx", "repo_type": "public"},
    },
    "operator": "robot$library+scanner-Trivy-51fe8548-bbe5-11ed-9870-0242ac120002",
}


def parse(doc: Any) -> list[Any]:
    return parse_webhook(doc, Classifier())


def test_default_pull_by_tag() -> None:
    [ev] = parse(DEFAULT_PULL)
    assert ev.time == datetime.fromtimestamp(1680502359, UTC)
    assert (ev.source, ev.action, ev.usage) == ("harbor", "pull", "use")
    assert (ev.repository, ev.digest, ev.tag) == ("library/nginx", D, "1.25")
    assert ev.registry == "harbor.example.com" and ev.actor == "admin"


def test_default_payload_id_is_a_stable_content_hash() -> None:
    [a] = parse(DEFAULT_PULL)
    [b] = parse(copy.deepcopy(DEFAULT_PULL))
    later = copy.deepcopy(DEFAULT_PULL)
    later["occur_at"] += 1
    [c] = parse(later)
    assert a.source_event_id == b.source_event_id != c.source_event_id


def test_cloudevents_scanner_pull_by_digest() -> None:
    [ev] = parse(CLOUD_SCAN_PULL)
    assert ev.source_event_id == "4b2f89a6-548d-4c12-9993-a1f5790b97d2#0"
    assert (ev.action, ev.usage, ev.digest, ev.tag) == ("pull", "scanner", D, None)
    assert ev.time == datetime(2023, 3, 6, 6, 8, 43, tzinfo=UTC)


@pytest.mark.parametrize(("kind", "action"), [("PUSH_ARTIFACT", "push"),
                                              ("DELETE_ARTIFACT", "delete")])
def test_push_and_delete(kind: str, action: str) -> None:
    doc = copy.deepcopy(DEFAULT_PULL)
    doc["type"] = kind
    [ev] = parse(doc)
    assert ev.action == action and ev.digest == D


def test_several_resources_give_several_events() -> None:
    doc = copy.deepcopy(DEFAULT_PULL)
    doc["event_data"]["resources"].append({"digest": "sha256:" + "1" * 64, "tag": "1.26"})
    got = parse(doc)
    assert [e.tag for e in got] == ["1.25", "1.26"]
    assert len({e.source_event_id for e in got}) == 2


@pytest.mark.parametrize("kind", ["SCANNING_COMPLETED", "QUOTA_EXCEED", "REPLICATION",
                                  "TAG_RETENTION", "harbor.scan.completed"])
def test_event_types_without_usage_are_accepted_and_empty(kind: str) -> None:
    doc = copy.deepcopy(DEFAULT_PULL)
    doc["type"] = kind
    assert parse(doc) == []


def _without(path: str) -> dict[str, Any]:
    doc = copy.deepcopy(DEFAULT_PULL)
    node: Any = doc
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    del node[last]
    return doc


@pytest.mark.parametrize(("doc", "where", "message"), [
    ({**DEFAULT_PULL, "type": "PULL_IMAGE"}, "type", "unknown Harbor event type"),
    (_without("type"), "type", "required"),
    (_without("occur_at"), "occur_at", "required"),
    ({**DEFAULT_PULL, "occur_at": "soon"}, "occur_at", "RFC 3339"),
    (_without("event_data"), "event_data", "required"),
    (_without("event_data.resources"), "event_data.resources", "required"),
    (_without("event_data.repository"), "event_data.repository", "required"),
    (_without("event_data.resources.0.digest"), "event_data.resources[0].digest", "required"),
    ({**DEFAULT_PULL, "operator": 3}, "operator", "must be a string"),
    ({**CLOUD_SCAN_PULL, "id": None}, "id", "required"),
])
def test_malformed_webhooks_name_the_problem(doc: Any, where: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        parse(doc)
    assert info.value.detail["where"] == where


def test_repository_from_namespace_and_name() -> None:
    doc = _without("event_data.repository.repo_full_name")
    [ev] = parse(doc)
    assert ev.repository == "library/nginx"
