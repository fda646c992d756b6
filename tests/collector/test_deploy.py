"""Deploy events: one object or an array; tag, digest or both."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from recommender.collector.deploy import parse_deploys
from recommender.errors import PayloadError

D = "sha256:" + "c" * 64
DEPLOY = {"timestamp": "2026-03-01T12:00:00+01:00",
          "image": f"registry.example.com/shop/api:1.4.2@{D}",
          "environment": "production", "cluster": "eu-1", "namespace": "shop"}


def test_the_documented_deploy() -> None:
    [ev] = parse_deploys(DEPLOY)
    assert ev.time == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert (ev.source, ev.action, ev.usage) == ("deploy", "deploy", "use")
    assert (ev.registry, ev.repository, ev.tag, ev.digest) == (
        "registry.example.com", "shop/api", "1.4.2", D)
    assert (ev.environment, ev.cluster, ev.namespace) == ("production", "eu-1", "shop")


@pytest.mark.parametrize(("image", "tag", "digest", "repository"), [
    ("registry.example.com/shop/api:1.4.2", "1.4.2", None, "shop/api"),
    (f"registry.example.com/shop/api@{D}", None, D, "shop/api"),
    ("localhost:5000/api", "latest", None, "api"),
    ("nginx", "latest", None, "library/nginx"),
])
def test_tag_digest_or_both(image: str, tag: str | None, digest: str | None,
                            repository: str) -> None:
    [ev] = parse_deploys({"timestamp": "2026-03-01T12:00:00Z", "image": image})
    assert (ev.tag, ev.digest, ev.repository) == (tag, digest, repository)
    assert ev.environment is None


def test_an_array_and_a_content_hash_id() -> None:
    a, b, c = parse_deploys([DEPLOY, DEPLOY, {**DEPLOY, "environment": "staging"}])
    assert a.source_event_id == b.source_event_id != c.source_event_id
    # the same instant written with another offset is the same deploy
    [d] = parse_deploys({**DEPLOY, "timestamp": "2026-03-01T11:00:00Z"})
    assert d.source_event_id == a.source_event_id


@pytest.mark.parametrize(("doc", "where", "message"), [
    ("text", None, "must be an object"),
    ([], None, "no deploy events"),
    ({"image": "nginx:1"}, "timestamp", "required"),
    ({"timestamp": "2026-03-01T12:00:00Z"}, "image", "required"),
    ({"timestamp": "2026-03-01T12:00:00Z", "image": 5}, "image", "must be a string"),
    ({"timestamp": "2026-03-01T12:00:00Z", "image": "Bad Image"}, "image", "white space"),
    ({"timestamp": "2026-03-01T12:00:00Z", "image": "a/b@sha512:" + "0" * 128}, "image",
     "sha256"),
    ({"timestamp": "2026-13-01T12:00:00Z", "image": "a"}, "timestamp", "not a valid time"),
    ({**DEPLOY, "cluster": ["eu"]}, "cluster", "must be a string"),
    ([DEPLOY, {"timestamp": 1767225600}], "[1].image", "required"),
])
def test_malformed_deploys_name_the_problem(doc: Any, where: str | None, message: str) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        parse_deploys(doc)
    assert info.value.detail.get("where") == (where or None)
