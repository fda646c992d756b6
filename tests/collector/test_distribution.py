"""Distribution notification envelopes, fed with the payloads of distribution's own docs."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from recommender.collector.distribution import parse_envelope
from recommender.errors import PayloadError
from recommender.usage import Classifier

DIGEST = "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"

# Verbatim from Distribution's docs/content/about/notifications.md.
DOCS_PULL = orjson.loads(b"""
{"events":[{"id":"320678d8-ca14-430f-8bb6-4ca139cd83f7","timestamp":"2016-03-09T14:44:26.402973972-08:00",
 "action":"pull","target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
 "digest":"sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf","size":708,"length":708,
 "repository":"hello-world","url":"http://192.168.100.227:5000/v2/hello-world/manifests/sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
 "tag":"latest"},"request":{"id":"6df24a34-0959-4923-81ca-14f09767db19","addr":"192.168.64.11:42961",
 "host":"192.168.100.227:5000","method":"GET","useragent":"curl/7.38.0"},"actor":{},
 "source":{"addr":"xtal.local:5000","instanceID":"a53db899-3b4b-4a62-a067-8dd013beaca4"}}]}
""")

# The shape of a blob push and of a manifest delete with its tag delete, as registry 2.8 sends.
BLOB_PUSH = {
    "id": "b0a1", "timestamp": "2026-03-01T10:00:00.123456789Z", "action": "push",
    "target": {"mediaType": "application/octet-stream", "size": 2811,
               "digest": "sha256:" + "b" * 64, "length": 2811, "repository": "shop/api",
               "url": "http://127.0.0.1:5000/v2/shop/api/blobs/sha256:" + "b" * 64},
    "request": {"id": "r1", "addr": "127.0.0.1:40000", "host": "127.0.0.1:5000",
                "method": "PUT", "useragent": "docker/24.0.7 go/go1.20.10"},
    "actor": {"name": "ci"}, "source": {"addr": "reg-1:5000", "instanceID": "i"},
}
MANIFEST_DELETE = {"id": "d1", "timestamp": "2026-03-02T10:00:00+02:00", "action": "delete",
                   "target": {"digest": DIGEST, "repository": "shop/api"},
                   "request": {"method": "DELETE", "useragent": "tagwarden/0.1.0"}}
TAG_DELETE = {"id": "d2", "timestamp": "2026-03-02T08:00:00Z", "action": "delete",
              "target": {"tag": "v1", "repository": "shop/api"},
              "request": {"method": "DELETE", "useragent": "tagwarden/0.1.0"}}


def parse(doc: Any) -> list[Any]:
    return parse_envelope(doc, Classifier())


def test_the_documented_pull_event() -> None:
    [ev] = parse(DOCS_PULL)
    assert ev.source == "distribution"
    assert ev.source_event_id == "320678d8-ca14-430f-8bb6-4ca139cd83f7"
    # nanoseconds and a -08:00 offset become aware UTC, microseconds kept
    assert ev.time == datetime(2016, 3, 9, 22, 44, 26, 402973, tzinfo=UTC)
    assert (ev.action, ev.repository, ev.digest, ev.tag) == ("pull", "hello-world", DIGEST,
                                                              "latest")
    assert ev.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert (ev.size, ev.method, ev.user_agent) == (708, "GET", "curl/7.38.0")
    assert ev.client_addr == "192.168.64.11:42961" and ev.registry == "192.168.100.227:5000"
    assert ev.actor is None and ev.usage == "use"


def test_blob_events_are_blob_usage() -> None:
    [ev] = parse({"events": [BLOB_PUSH]})
    assert (ev.action, ev.usage, ev.size) == ("push", "blob", 2811)
    assert ev.time.microsecond == 123456 and ev.actor == "ci"


def test_manifest_delete_then_tag_delete() -> None:
    got = parse({"events": [MANIFEST_DELETE, TAG_DELETE]})
    assert [(e.action, e.digest, e.tag) for e in got] == [("delete", DIGEST, None),
                                                          ("delete", None, "v1")]
    assert got[0].time == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert got[0].usage == "self"


def test_a_repository_delete_names_only_the_repository() -> None:
    # distribution 3.x notifications/bridge.go RepoDeleted: target {repository} alone
    [ev] = parse({"events": [{"id": "r1", "timestamp": "2026-03-02T08:00:00Z",
                              "action": "delete", "target": {"repository": "shop/old"}}]})
    assert (ev.action, ev.repository, ev.digest, ev.tag) == ("delete", "shop/old", None, None)


def test_size_falls_back_to_length_and_head_is_kept() -> None:
    ev = copy.deepcopy(DOCS_PULL)
    del ev["events"][0]["target"]["size"]
    ev["events"][0]["request"]["method"] = "HEAD"
    [got] = parse(ev)
    assert got.size == 708 and got.method == "HEAD" and got.usage == "use"


def test_an_empty_envelope_has_no_events() -> None:
    assert parse({"events": []}) == []


def _with(path: str, value: Any, *, delete: bool = False) -> dict[str, Any]:
    doc = copy.deepcopy(DOCS_PULL)
    node: Any = doc["events"][0]
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(("doc", "where", "message"), [
    ([], None, "document must be an object"),
    ({}, "events", "events is required"),
    ({"events": {}}, "events", "must be an array"),
    ({"events": [1]}, "events[0]", "must be an object"),
    (_with("id", None, delete=True), "events[0].id", "required"),
    (_with("id", 7), "events[0].id", "must be a string, got an integer"),
    (_with("timestamp", "yesterday"), "events[0].timestamp", "RFC 3339"),
    (_with("timestamp", True), "events[0].timestamp", "must be a time"),
    (_with("action", "pul"), "events[0].action", "unknown action 'pul'"),
    (_with("target", None, delete=True), "events[0].target", "required"),
    (_with("target", "x"), "events[0].target", "must be an object"),
    (_with("target.repository", None, delete=True), "events[0].target.repository", "required"),
    (_with("target.digest", "sha256:abc"), "events[0].target.digest", "not a sha256 digest"),
    (_with("target.digest", None, delete=True), "events[0].target.digest", "required"),
    (_with("target.size", "708"), "events[0].target.size", "must be an integer"),
    (_with("target.size", -1), "events[0].target.size", "negative"),
    (_with("target.size", 2**63), "events[0].target.size", "too large"),
    (_with("request", []), "events[0].request", "must be an object"),
    (_with("request.useragent", 5), "events[0].request.useragent", "must be a string"),
    (_with("actor.name", {}), "events[0].actor.name", "must be a string"),
])
def test_malformed_events_name_the_problem(doc: Any, where: str | None, message: str) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        parse(doc)
    assert info.value.detail.get("where") == where
    assert info.value.status_code == 400


def test_one_bad_event_rejects_the_envelope() -> None:
    doc = {"events": [DOCS_PULL["events"][0], {**BLOB_PUSH, "action": "patch"}]}
    with pytest.raises(PayloadError) as info:
        parse(doc)
    assert info.value.detail["where"] == "events[1].action"
