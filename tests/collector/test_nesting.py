"""Deeply nested JSON: every collector endpoint answers 400, never a 500 (RecursionError)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from recommender.collector.distribution import parse_envelope_line
from recommender.errors import PayloadError
from recommender.usage import Classifier
from tests.collector.test_app import AUTH, serve_lite  # noqa: F401 - a fixture

ENDPOINTS = ["/v1/events/distribution", "/v1/events/harbor", "/v1/events/deploy",
             "/v1/k8s/pods?source=eu-1", "/v1/refs"]


def nested(depth: int) -> bytes:
    """An envelope whose one event's target is an object ``depth`` levels deep."""
    return (b'{"events": [{"id": "e1", "timestamp": "2026-01-02T03:04:05.123456789Z", '
            b'"action": "pull", "target": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}]}")


@pytest.mark.parametrize("depth", [1_000, 2_000])
def test_the_file_parser_refuses_deep_nesting_as_a_bad_line(depth: int) -> None:
    with pytest.raises(PayloadError):
        parse_envelope_line(nested(depth), Classifier())


def test_every_endpoint_answers_400_to_deep_nesting(serve_lite: Any) -> None:  # noqa: F811
    client: httpx.Client = serve_lite()
    headers = {**AUTH, "Content-Type": "application/json"}
    for depth in (1_000, 2_000):
        for path in ENDPOINTS:
            r = client.post(path, content=nested(depth), headers=headers)
            assert r.status_code == 400, (path, depth, r.text)
            assert r.json()["error"]
    # Past orjson's limit, every endpoint says so in the same words.
    for path in ENDPOINTS:
        r = client.post(path, content=nested(2_000), headers=headers)
        assert "depth limit exceeded" in r.json()["error"], (path, r.text)
