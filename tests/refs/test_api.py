"""``POST /v1/refs`` served for real (uvicorn on loopback) inside the server's app.

Every refusal is checked twice: the answer (status, JSON naming the problem) and the store
(nothing written by that request).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from recommender.config import Config, load
from recommender.refs import current_references, declared_references
from recommender.server import build_app
from recommender.store import Store
from recommender.store.tables import declared_refs
from tests.support.live_server import LiveServer

TOKEN = "refs-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
A = "sha256:" + "a" * 64


def make_config(**overrides: Any) -> Config:
    values = {"collector.token": TOKEN, "registry.url": "http://reg.local:5000",
              "collector.max_body_bytes": 4096}
    values.update(overrides)
    return load(None, env={}, overrides=values)


def serve(config: Config, store: Store) -> LiveServer:
    # the server's own composition: build_app mounts RefsApi beside the collector
    return LiveServer(build_app(config, store, clock=lambda: NOW)).start()


@pytest.fixture
def server(sqlite_store: Store) -> Iterator[tuple[httpx.Client, Store]]:
    live = serve(make_config(), sqlite_store)
    try:
        with httpx.Client(base_url=live.url, timeout=10) as client:
            yield client, sqlite_store
    finally:
        live.stop()


def stored(store: Store) -> int:
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(declared_refs)).scalar_one())


def test_list_form_records_each_source(server: tuple[httpx.Client, Store]) -> None:
    client, store = server
    body = [
        {"image": f"reg.local:5000/team/app@{A}", "source": "ci/app",
         "location": "deploy/prod.yaml:12"},
        {"image": "reg.local:5000/team/base:3", "source": "ci/app", "location": "Dockerfile:1"},
        {"image": "python:3.12", "source": "ci/tools", "location": "tools/Dockerfile:1"},
    ]
    response = client.post("/v1/refs", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "references": 3,
        "sources": {"ci/app": {"added": 2, "removed": 0, "unchanged": 0},
                    "ci/tools": {"added": 1, "removed": 0, "unchanged": 0}},
    }
    with store.connect() as conn:
        assert declared_references(conn, at=NOW) == {("team/app", A): ["deploy/prod.yaml:12"]}
        listed = current_references(conn, at=NOW)
    assert {(r["source"], r["kind"], r["repository"]) for r in listed} == {
        ("ci/app", "api", "team/app"), ("ci/app", "api", "team/base"), ("ci/tools", "api", None)}


def test_object_form_replaces_and_can_clear(server: tuple[httpx.Client, Store]) -> None:
    client, store = server
    item = {"image": f"reg.local:5000/team/app@{A}", "location": "k.yaml:3"}
    first = client.post("/v1/refs", json={"source": "ci/app", "references": [item]}, headers=AUTH)
    assert first.json()["sources"]["ci/app"] == {"added": 1, "removed": 0, "unchanged": 0}
    cleared = client.post("/v1/refs", json={"source": "ci/app", "references": []}, headers=AUTH)
    assert cleared.status_code == 200
    assert cleared.json()["sources"]["ci/app"] == {"added": 0, "removed": 1, "unchanged": 0}
    with store.connect() as conn:
        assert declared_references(conn, at=NOW) == {}


GOOD = {"image": "reg.local:5000/team/app:1", "source": "ci", "location": "a.yaml:1"}


@pytest.mark.parametrize(
    ("body", "status", "error", "where"),
    [
        (b"{not json", 400, "body is not JSON", "body"),
        (b"", 400, "empty request body", "body"),
        (b'"text"', 400, "expected a JSON list", "body"),
        (b"[]", 400, "empty list", "body"),
        (orjson.dumps([GOOD, 7]), 400, "[1] must be an object", "[1]"),
        (orjson.dumps([GOOD, {**GOOD, "tag": "x"}]), 400, "unknown key 'tag'", "[1].tag"),
        (orjson.dumps([{"image": "x:1", "source": "ci"}]), 400, "missing 'location'",
         "[0].location"),
        (orjson.dumps([GOOD, {**GOOD, "image": "reg.local:5000/Team/App:1"}]), 400,
         "must be lowercase", "[1].image"),
        (orjson.dumps([GOOD, {**GOOD, "image": "{{ .Values.image }}"}]), 400,
         "unrendered template", "[1].image"),
        (orjson.dumps([GOOD, {**GOOD, "source": ""}]), 400, "non-empty string", "[1].source"),
        (orjson.dumps([GOOD, {**GOOD, "location": 3}]), 400, "non-empty string",
         "[1].location"),
        (orjson.dumps({"source": "ci"}), 400, "references must be a list", "body.references"),
        (orjson.dumps({"source": "ci", "references": [{"image": "x:1"}]}), 400,
         "non-empty string", "references[0].location"),
        (b"[" + b" " * 5000 + b"]", 413, "over the limit", None),
    ],
)
def test_bad_bodies_are_refused_and_store_nothing(
    server: tuple[httpx.Client, Store], body: bytes, status: int, error: str, where: str | None
) -> None:
    client, store = server
    response = client.post("/v1/refs", content=body,
                           headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    answer = response.json()
    assert error in answer["error"]
    assert answer.get("where") == where
    assert stored(store) == 0


def test_other_media_types_are_refused(server: tuple[httpx.Client, Store]) -> None:
    client, store = server
    response = client.post("/v1/refs", content=orjson.dumps([GOOD]),
                           headers={**AUTH, "Content-Type": "text/csv"})
    assert response.status_code == 415
    assert response.json()["where"] == "header.content-type"
    assert stored(store) == 0


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [({}, 401, "missing bearer token"),
     ({"Authorization": "Bearer wrong"}, 401, "wrong bearer token"),
     ({"Authorization": f"Basic {TOKEN}"}, 401, "missing bearer token")],
)
def test_token_is_required(server: tuple[httpx.Client, Store], headers: dict[str, str],
                           status: int, error: str) -> None:
    client, store = server
    response = client.post("/v1/refs", json=[GOOD], headers=headers)
    assert response.status_code == status
    assert error in response.json()["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert stored(store) == 0


def test_unset_token_refuses_everything(sqlite_store: Store) -> None:
    live = serve(make_config(**{"collector.token": None}), sqlite_store)
    try:
        response = httpx.post(f"{live.url}/v1/refs", json=[GOOD], headers=AUTH)
    finally:
        live.stop()
    assert response.status_code == 503
    assert response.json()["setting"] == "collector.token"
    assert stored(sqlite_store) == 0
