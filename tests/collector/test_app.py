"""The collector's HTTP endpoints, served for real by uvicorn on loopback, on SQLite and PostgreSQL.

Every refusal is checked twice: the answer (status and a JSON body naming the problem) and
the store (nothing written from that request).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text

from recommender.collector.app import Collector
from recommender.collector.writer_process import ProcessWriter
from recommender.config import load
from recommender.server import build_app
from recommender.store import Store, tables
from tests.support.live_server import LiveServer

TOKEN = "s3cret-collector-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
V2 = "application/vnd.docker.distribution.events.v2+json"
V1 = "application/vnd.docker.distribution.events.v1+json"
DIGEST = "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"

# The pull event from Distribution's docs/content/about/notifications.md, verbatim.
DOCS_PULL = {"events": [{
    "id": "320678d8-ca14-430f-8bb6-4ca139cd83f7",
    "timestamp": "2016-03-09T14:44:26.402973972-08:00",
    "action": "pull",
    "target": {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "digest": DIGEST, "size": 708, "length": 708, "repository": "hello-world",
        "url": f"http://192.168.100.227:5000/v2/hello-world/manifests/{DIGEST}",
        "tag": "latest",
    },
    "request": {"id": "6df24a34-0959-4923-81ca-14f09767db19", "addr": "192.168.64.11:42961",
                "host": "192.168.100.227:5000", "method": "GET", "useragent": "curl/7.38.0"},
    "actor": {},
    "source": {"addr": "xtal.local:5000", "instanceID": "a53db899-3b4b-4a62-a067-8dd013beaca4"},
}]}


def pull_event(n: int, *, useragent: str = "containerd/1.7.2", repo: str = "shop/web") -> dict:
    return {
        "id": f"evt-{n}", "timestamp": f"2026-01-02T03:04:{n % 60:02d}.123456789Z",
        "action": "pull",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST,
                   "size": 708, "repository": repo, "tag": "v1"},
        "request": {"method": "GET", "useragent": useragent, "addr": "10.0.0.1:5555"},
        "actor": {},
    }


def make_config(**overrides: Any) -> Any:
    settings = {"collector.token": TOKEN, "collector.max_body_bytes": 64 * 1024}
    settings.update(overrides)
    return load(env={}, overrides=settings)


def _serving(store: Store, writer: str = "thread") -> Iterator[Any]:
    servers: list[LiveServer] = []
    clients: list[httpx.Client] = []

    def start(**settings: Any) -> httpx.Client:
        config = make_config(**settings)
        collector = None
        if writer == "process":  # `tagwarden serve --writer process`
            collector = Collector(config, store, writer=ProcessWriter(
                store.engine.url.render_as_string(hide_password=False)))
        server = LiveServer(build_app(config, store, collector=collector)).start(timeout=60)
        servers.append(server)
        client = httpx.Client(base_url=server.url, timeout=10)
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop()


@pytest.fixture
def serve(store: Store) -> Iterator[Any]:
    """``serve(**settings)`` -> a running collector (httpx client on its URL) over ``store``."""
    yield from _serving(store)


@pytest.fixture(params=["thread", "process"])
def serve_any(request: pytest.FixtureRequest, store: Store) -> Iterator[Any]:
    """``serve`` with the writer on the batcher's thread, then in a writer process."""
    yield from _serving(store, request.param)


@pytest.fixture
def serve_lite(sqlite_store: Store) -> Iterator[Any]:
    """The same on SQLite only, for refusals decided before the store is touched."""
    yield from _serving(sqlite_store)


def count(store: Store, table: Any = tables.events) -> int:
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample from /metrics (0 when absent)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


# --- accepted payloads -----------------------------------------------------------------------


def test_docs_pull_event_is_stored_normalised(serve_any: Any, store: Store) -> None:
    client = serve_any()
    r = client.post("/v1/events/distribution", content=json.dumps(DOCS_PULL),
                    headers={**AUTH, "Content-Type": V2})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1}
    with store.connect() as conn:
        row = conn.execute(select(tables.events)).mappings().one()
    assert row["source"] == "distribution"
    assert row["source_event_id"] == "320678d8-ca14-430f-8bb6-4ca139cd83f7"
    assert row["action"] == "pull"
    assert (row["repository"], row["digest"], row["tag"]) == ("hello-world", DIGEST, "latest")
    # -08:00 with nanoseconds -> UTC, microseconds kept
    assert row["time"] == datetime(2016, 3, 9, 22, 44, 26, 402973, tzinfo=UTC)
    assert row["usage"] == "use"  # curl is not a scanner/replicator/janitor: the safe side
    assert row["user_agent"] == "curl/7.38.0"
    assert metric(client, "tagwarden_events_received_total", source="distribution",
                  usage="use") == 1


@pytest.mark.parametrize("media_type", [V2, V1, "application/json",
                                        "application/json; charset=utf-8", None])
def test_distribution_accepts_both_media_types_and_plain_json(
    serve_lite: Any, sqlite_store: Store, media_type: str | None
) -> None:
    client = serve_lite()
    headers = dict(AUTH)
    if media_type:
        headers["Content-Type"] = media_type
    r = client.post("/v1/events/distribution",
                    content=json.dumps({"events": [pull_event(1), pull_event(2)]}),
                    headers=headers)
    assert r.status_code == 200, r.text
    assert count(sqlite_store) == 2


def test_duplicates_are_accepted_and_stored_once(serve_any: Any, store: Store) -> None:
    client = serve_any()
    body = json.dumps({"events": [pull_event(1), pull_event(2)]})
    for _ in range(3):  # a retrying registry: same ids again
        r = client.post("/v1/events/distribution", content=body, headers=AUTH)
        assert r.status_code == 200
    assert count(store) == 2
    assert metric(client, "tagwarden_events_stored_total") == 2
    assert metric(client, "tagwarden_events_duplicate_total") == 4


def test_scanner_pull_is_classified_as_scanner(serve: Any, store: Store) -> None:
    client = serve()
    body = {"events": [pull_event(1, useragent="trivy/0.50.1"), pull_event(2)]}
    assert client.post("/v1/events/distribution", json=body, headers=AUTH).status_code == 200
    with store.connect() as conn:
        usage = dict(conn.execute(
            select(tables.events.c.source_event_id, tables.events.c.usage)).all())
    assert usage == {"evt-1": "scanner", "evt-2": "use"}
    assert metric(client, "tagwarden_events_received_total", source="distribution",
                  usage="scanner") == 1


def test_deploy_accepts_an_object_an_array_and_json_lines(serve: Any, store: Store) -> None:
    client = serve()

    def deploy(n: int) -> dict[str, str]:
        return {"timestamp": f"2026-01-0{n}T10:00:00Z", "image": f"registry.example/shop/web:v{n}",
                "environment": "production", "cluster": "eu-1", "namespace": "shop"}

    one = client.post("/v1/events/deploy", json=deploy(1), headers=AUTH)
    many = client.post("/v1/events/deploy", json=[deploy(2), deploy(3)], headers=AUTH)
    lines = "\n".join(json.dumps(deploy(n)) for n in (4, 5, 6)) + "\n"
    jsonl = client.post("/v1/events/deploy", content=lines,
                        headers={**AUTH, "Content-Type": "application/x-ndjson"})
    assert [r.json() for r in (one, many, jsonl)] == [{"accepted": 1}, {"accepted": 2},
                                                      {"accepted": 3}]
    with store.connect() as conn:
        rows = conn.execute(select(tables.events.c.tag, tables.events.c.environment)
                            .order_by(tables.events.c.time)).all()
    assert rows == [(f"v{n}", "production") for n in range(1, 7)]


def test_harbor_default_webhook_is_stored(serve: Any, store: Store) -> None:
    client = serve()
    hook = {
        "type": "PULL_ARTIFACT", "occur_at": 1767322800, "operator": "alice",
        "event_data": {
            "resources": [{"digest": DIGEST, "tag": "v1",
                           "resource_url": "harbor.example/shop/web:v1"}],
            "repository": {"name": "web", "namespace": "shop", "repo_full_name": "shop/web",
                           "repo_type": "private"},
        },
    }
    r = client.post("/v1/events/harbor", json=hook, headers=AUTH)
    assert r.status_code == 200, r.text
    assert client.post("/v1/events/harbor", json=hook, headers=AUTH).status_code == 200
    with store.connect() as conn:
        row = conn.execute(select(tables.events)).mappings().one()  # the retry stored nothing
    assert (row["source"], row["action"], row["repository"], row["tag"]) == (
        "harbor", "pull", "shop/web", "v1")


def pod_list(image_id: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": [{
        "metadata": {"name": "web-1", "namespace": "shop"},
        "spec": {"containers": [{"name": "web", "image": "registry.example/shop/web:v1"}]},
        "status": {"containerStatuses": [{"name": "web", "image": "registry.example/shop/web:v1",
                                          "imageID": image_id}]},
    }]}


def test_pod_list_becomes_a_snapshot(serve_any: Any, store: Store) -> None:
    client = serve_any()
    doc = pod_list(f"registry.example/shop/web@{DIGEST}")
    r = client.post("/v1/k8s/pods", params={"source": "eu-1", "at": "2026-01-02T03:00:00+01:00"},
                    json=doc, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["pods"] == 1 and r.json()["refs"] >= 1
    with store.connect() as conn:
        snap = conn.execute(select(tables.k8s_snapshots)).mappings().one()
        refs = conn.execute(select(tables.running_refs)).mappings().all()
    assert snap["source"] == "eu-1"
    assert snap["taken_at"] == datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
    assert {(r["repository"], r["digest"]) for r in refs} == {("shop/web", DIGEST)}


@pytest.mark.parametrize("params,where", [({}, "query.source"),
                                          ({"source": "eu-1", "at": "yesterday"}, "query.at"),
                                          ({"source": "x" * 129}, "query.source")])
def test_pod_list_query_errors(
    serve_lite: Any, sqlite_store: Store, params: dict, where: str
) -> None:
    client = serve_lite()
    r = client.post("/v1/k8s/pods", params=params, json=pod_list(f"r.example/a@{DIGEST}"),
                    headers=AUTH)
    assert r.status_code == 400
    assert r.json()["where"] == where
    assert count(sqlite_store, tables.k8s_snapshots) == 0


# --- refused requests store nothing -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/events/distribution", "/v1/events/harbor",
                                  "/v1/events/deploy", "/v1/events/cloudtrail",
                                  "/v1/k8s/pods?source=eu-1"])
def test_auth_is_required_on_every_post(serve_lite: Any, sqlite_store: Store, path: str) -> None:
    client = serve_lite()
    body = json.dumps({"events": [pull_event(1)]})
    missing = client.post(path, content=body)
    wrong = client.post(path, content=body, headers={"Authorization": "Bearer nope"})
    basic = client.post(path, content=body, headers={"Authorization": f"Basic {TOKEN}"})
    for r in (missing, wrong, basic):
        assert r.status_code == 401
        assert "error" in r.json()
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert count(sqlite_store) == 0 and count(sqlite_store, tables.k8s_snapshots) == 0
    assert metric(client, "tagwarden_requests_rejected_total",
                  source=path.split("/")[-1].split("?")[0].replace("pods", "k8s"),
                  reason="auth") == 3


def test_without_a_configured_token_every_post_is_refused(serve: Any, store: Store) -> None:
    client = serve(**{"collector.token": ""})
    r = client.post("/v1/events/distribution", json={"events": [pull_event(1)]},
                    headers={"Authorization": "Bearer anything"})
    assert r.status_code == 503
    assert r.json()["setting"] == "collector.token"
    assert count(store) == 0
    assert client.get("/healthz").status_code == 200  # the server itself is fine


def test_body_over_the_limit_is_413(serve_lite: Any, sqlite_store: Store) -> None:
    client = serve_lite(**{"collector.max_body_bytes": 4096})
    events = [pull_event(n) for n in range(40)]  # ~10 KB
    body = json.dumps({"events": events}).encode()
    assert len(body) > 4096
    declared = client.post("/v1/events/distribution", content=body, headers=AUTH)
    assert declared.status_code == 413
    assert declared.json()["limit"] == 4096

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    streamed = client.post("/v1/events/distribution", content=chunks(), headers=AUTH)
    assert streamed.status_code == 413
    assert count(sqlite_store) == 0
    small = client.post("/v1/events/distribution", json={"events": events[:3]}, headers=AUTH)
    assert small.status_code == 200  # the limit is on size, not a broken server


BAD_ENVELOPES = [
    pytest.param(b'{"events": [', "body", id="malformed-json"),
    pytest.param(b"\xff\xfe not utf-8", "body", id="not-utf8"),
    pytest.param(b"[]", None, id="not-an-object"),
    pytest.param(json.dumps({"events": "nope"}).encode(), "events", id="events-not-a-list"),
    pytest.param(json.dumps({"events": [pull_event(1), {**pull_event(2), "action": "steal"}]})
                 .encode(), "events[1].action", id="unknown-action"),
    pytest.param(json.dumps({"events": [pull_event(1), {**pull_event(2), "target": {
        "repository": "shop/web", "mediaType": "x"}}]}).encode(), "events[1].target.digest",
        id="missing-digest"),
    pytest.param(json.dumps({"events": [{**pull_event(1), "target": "shop/web"}]}).encode(),
                 "events[0].target", id="wrong-type"),
]


@pytest.mark.parametrize("body,where", BAD_ENVELOPES)
def test_bad_envelopes_are_400_naming_the_problem(
    serve_lite: Any, sqlite_store: Store, body: bytes, where: str | None
) -> None:
    client = serve_lite()
    r = client.post("/v1/events/distribution", content=body, headers=AUTH)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert doc["error"]
    if where is not None:
        assert doc["where"] == where
    assert count(sqlite_store) == 0  # the good event beside a bad one is not stored either


def test_bad_json_line_is_named(serve_lite: Any, sqlite_store: Store) -> None:
    client = serve_lite()
    good = json.dumps({"timestamp": "2026-01-01T00:00:00Z", "image": "r.example/a:v1"})
    r = client.post("/v1/events/deploy", content=f"{good}\n{good}\n{{oops\n", headers=AUTH)
    assert r.status_code == 400
    assert r.json()["where"] == "line 3"
    assert count(sqlite_store) == 0


def test_wrong_media_type_is_415(serve_lite: Any, sqlite_store: Store) -> None:
    client = serve_lite()
    r = client.post("/v1/events/distribution", content=json.dumps({"events": [pull_event(1)]}),
                    headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert r.json()["where"] == "header.content-type"
    assert count(sqlite_store) == 0


def test_gzip_body_without_declaring_it_is_refused(serve_lite: Any, sqlite_store: Store) -> None:
    client = serve_lite()
    r = client.post("/v1/events/distribution",
                    content=gzip.compress(json.dumps({"events": [pull_event(1)]}).encode()),
                    headers=AUTH)
    assert r.status_code == 400
    assert count(sqlite_store) == 0


def test_values_the_database_refuses_are_400_not_503(serve_any: Any, store: Store) -> None:
    """A retry could never succeed, so this is the request's fault, not the store's."""
    client = serve_any()
    huge = pull_event(1)
    huge["target"]["size"] = 2**63
    nul = pull_event(2, useragent="curl\u0000/8")
    accepted = 0
    for event in (huge, nul):
        r = client.post("/v1/events/distribution", content=json.dumps({"events": [event]}),
                        headers=AUTH)
        if r.status_code == 200:  # SQLite keeps NUL characters in text: nothing to refuse
            assert store.dialect == "sqlite" and event is nul
            accepted += 1
            continue
        assert r.status_code == 400, r.text
        # the parser may refuse it first (naming the field), else the store does
        assert r.json()["where"] in ("store", "events[0].target.size",
                                     "events[0].request.useragent")
    assert count(store) == accepted


# --- the store failing ---------------------------------------------------------------------------


def test_store_failure_is_503_and_stores_nothing_then_recovers(
        serve_any: Any, store: Store) -> None:
    client = serve_any()
    # Break the store for real: the events table disappears under the running collector.
    with store.begin() as conn:
        conn.execute(text("ALTER TABLE events RENAME TO events_away"))
    body = {"events": [pull_event(1), pull_event(2)]}
    r = client.post("/v1/events/distribution", json=body, headers=AUTH)
    assert r.status_code == 503
    assert r.headers["Retry-After"]
    assert r.json()["error"].startswith("the store refused")
    with store.begin() as conn:
        conn.execute(text("ALTER TABLE events_away RENAME TO events"))
        assert conn.execute(text("SELECT count(*) FROM rollups")).scalar_one() == 0
    assert count(store) == 0
    retry = client.post("/v1/events/distribution", json=body, headers=AUTH)  # the registry retries
    assert retry.status_code == 200
    assert count(store) == 2
    assert metric(client, "tagwarden_requests_rejected_total", source="distribution",
                  reason="store") == 1


# --- health and metrics ---------------------------------------------------------------------------


def test_healthz_and_metrics(serve: Any, store: Store) -> None:
    client = serve()
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "store": store.dialect}
    client.post("/v1/events/distribution", json={"events": [pull_event(n) for n in range(10)]},
                headers=AUTH)
    m = client.get("/metrics")
    assert m.headers["content-type"].startswith("text/plain")
    assert metric(client, "tagwarden_batch_events_count") >= 1
    assert metric(client, "tagwarden_batch_events_sum") == 10
    assert metric(client, "tagwarden_write_seconds_count") >= 1
    wrong_method = client.get("/v1/events/distribution")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "Method Not Allowed"
    assert client.post("/nowhere", headers=AUTH).json()["path"] == "/nowhere"


def test_declared_references_endpoint_is_served(serve: Any, store: Store) -> None:
    client = serve()
    assert client.post("/v1/refs", json=[]).status_code == 401  # E's endpoint, same token
    assert client.post("/v1/refs", json={"source": "ci", "references": []},
                       headers=AUTH).status_code < 300


def test_healthz_says_when_the_store_is_unreachable(tmp_path: Any) -> None:
    unreachable = Store.from_url(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    with LiveServer(build_app(make_config(), unreachable)) as server:
        r = httpx.get(f"{server.url}/healthz")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable"
        assert r.json()["error"].startswith("store: unable to open database file")
        posted = httpx.post(f"{server.url}/v1/events/distribution", headers=AUTH,
                            json={"events": [pull_event(1)]})
        assert posted.status_code == 503  # the registry keeps the event and retries
    unreachable.dispose()


def test_harbor_cloudevents_media_type_is_accepted(serve_lite: Any, sqlite_store: Store) -> None:
    client = serve_lite()
    hook = {
        "specversion": "1.0", "id": "3bd2e1fb-8c52-4d4c-9c0b-1d1b1f0e7b11",
        "type": "harbor.artifact.pulled", "time": "2026-01-02T03:04:05Z", "operator": "bob",
        "data": {"resources": [{"digest": DIGEST, "tag": DIGEST,
                                "resource_url": f"harbor.example/shop/web@{DIGEST}"}],
                 "repository": {"name": "web", "namespace": "shop",
                                "repo_full_name": "shop/web"}},
    }
    r = client.post("/v1/events/harbor", content=json.dumps(hook),
                    headers={**AUTH, "Content-Type": "application/cloudevents+json"})
    assert r.status_code == 200, r.text
    assert count(sqlite_store) == 1


def test_pod_snapshot_without_at_is_stamped_by_the_app_clock(sqlite_store: Store) -> None:
    fixed = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    app = build_app(make_config(), sqlite_store, clock=lambda: fixed)
    with LiveServer(app) as server:
        for params in ({"source": "eu-1"}, {"source": "eu-2", "at": "now"}):
            r = httpx.post(f"{server.url}/v1/k8s/pods", params=params, headers=AUTH,
                           json=pod_list(f"registry.example/shop/web@{DIGEST}"))
            assert r.status_code == 200, r.text
            assert r.json()["taken_at"] == fixed.isoformat()
    with sqlite_store.connect() as conn:
        taken = conn.execute(select(tables.k8s_snapshots.c.taken_at)).scalars().all()
    assert taken == [fixed, fixed]
