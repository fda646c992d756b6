"""Property tests: no input makes a collector endpoint answer 5xx.

Random JSON, random bytes, random headers and query strings, and payloads shaped like the real
ones with random leaves (so they get deep into the parsers), sent over real HTTP to one
collector served by uvicorn. Example counts are kept small so the whole file runs in seconds.
"""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender.config import load
from recommender.server import build_app
from recommender.store import open_store
from tests.support import postgres
from tests.support.live_server import LiveServer

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DIGEST = "sha256:" + "ab" * 32
PATHS = ["/v1/events/distribution", "/v1/events/harbor", "/v1/events/deploy",
         "/v1/k8s/pods?source=fuzz"]

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[httpx.Client]:
    """One collector per backend: PostgreSQL refuses values SQLite keeps (NUL, long text)."""
    if request.param == "sqlite":
        db: Path = tmp_path_factory.mktemp("fuzz") / "store.db"
        url = f"sqlite:///{db}"
    else:
        url = postgres.create_database(request.getfixturevalue("postgres_server"),
                                       f"fuzz_{uuid.uuid4().hex[:12]}")
    store = open_store(url)
    config = load(env={}, overrides={"collector.token": TOKEN,
                                     "collector.max_body_bytes": 16 * 1024})
    with LiveServer(build_app(config, store)) as server, \
            httpx.Client(base_url=server.url, timeout=20) as http:
        yield http
    store.dispose()


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert "error" in response.json()


scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | json_values


times = st.sampled_from([
    "2026-01-02T03:04:05.123456789-08:00", "2026-01-02", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59+14:00", "2026-13-45T99:99:99Z", "",
]) | st.text(max_size=30)
digests = st.sampled_from([DIGEST, "sha256:short", "md5:" + "a" * 32, ""]) | st.text(max_size=80)
names = st.sampled_from(["shop/web", "a" * 300, "UPPER/case", "", "x/../y"]) | st.text(max_size=40)
images = st.sampled_from([f"r.example/shop/web:v1@{DIGEST}", "shop/web", "::", "a" * 2000,
                          f"docker-pullable://r.example/a@{DIGEST}", "docker://sha256:abc"]) \
    | st.text(max_size=60)

distribution_event = st.fixed_dictionaries({}, optional={
    "id": maybe(st.text(max_size=200)),
    "timestamp": maybe(times),
    "action": maybe(st.sampled_from(["push", "pull", "mount", "delete", "steal"])),
    "target": maybe(st.fixed_dictionaries({}, optional={
        "repository": maybe(names), "digest": maybe(digests), "tag": maybe(st.text(max_size=150)),
        "mediaType": maybe(st.sampled_from(["application/vnd.oci.image.manifest.v1+json",
                                            "application/octet-stream"])),
        "size": maybe(st.integers()), "length": maybe(st.integers()),
        "url": maybe(st.text(max_size=30)),
    })),
    "request": maybe(st.fixed_dictionaries({}, optional={
        "method": maybe(st.sampled_from(["GET", "HEAD", "DELETE", "PUT", "X" * 20])),
        "useragent": maybe(st.sampled_from(["trivy/0.50", "containerd/1.7", "x" * 600])),
        "addr": maybe(st.text(max_size=80)),
    })),
    "actor": maybe(st.fixed_dictionaries({}, optional={"name": maybe(st.text(max_size=300))})),
})
envelopes = st.fixed_dictionaries({"events": st.lists(distribution_event, max_size=3)})
harbor_hooks = st.fixed_dictionaries({}, optional={
    "type": maybe(st.sampled_from(["PUSH_ARTIFACT", "PULL_ARTIFACT", "DELETE_ARTIFACT",
                                   "harbor.artifact.pulled", "SCANNING_COMPLETED", "NOPE"])),
    "specversion": maybe(st.just("1.0")),
    "occur_at": maybe(st.integers() | st.floats(allow_nan=False)),
    "time": maybe(times),
    "id": maybe(st.text(max_size=200)),
    "operator": maybe(st.sampled_from(["robot$harbor+x-Trivy-1", "alice"])),
    "event_data": maybe(st.fixed_dictionaries({}, optional={
        "resources": maybe(st.lists(st.fixed_dictionaries({}, optional={
            "digest": maybe(digests), "tag": maybe(st.text(max_size=150)),
            "resource_url": maybe(images)}), max_size=3)),
        "repository": maybe(st.fixed_dictionaries({}, optional={
            "name": maybe(names), "namespace": maybe(names),
            "repo_full_name": maybe(names)})),
    })),
})
deploys = st.fixed_dictionaries({}, optional={
    "timestamp": maybe(times), "image": maybe(images), "environment": maybe(st.text(max_size=200)),
    "cluster": maybe(st.text(max_size=200)), "namespace": maybe(st.text(max_size=200)),
})
container = st.fixed_dictionaries({}, optional={
    "name": maybe(st.text(max_size=10)), "image": maybe(images), "imageID": maybe(images)})
pods = st.fixed_dictionaries({}, optional={
    "kind": maybe(st.sampled_from(["List", "PodList", "Pod"])),
    "items": maybe(st.lists(st.fixed_dictionaries({}, optional={
        "metadata": maybe(st.fixed_dictionaries({}, optional={
            "name": maybe(st.text(max_size=300)), "namespace": maybe(st.text(max_size=200))})),
        "spec": maybe(st.fixed_dictionaries({}, optional={
            "containers": maybe(st.lists(container, max_size=2)),
            "initContainers": maybe(st.lists(container, max_size=2))})),
        "status": maybe(st.fixed_dictionaries({}, optional={
            "containerStatuses": maybe(st.lists(container, max_size=2)),
            "ephemeralContainerStatuses": maybe(st.lists(container, max_size=2))})),
    }), max_size=3)),
})
SHAPED = {
    "/v1/events/distribution": envelopes,
    "/v1/events/harbor": harbor_hooks,
    "/v1/events/deploy": deploys | st.lists(deploys, max_size=3),
    "/v1/k8s/pods?source=fuzz": pods,
}


@FUZZ
@given(path=st.sampled_from(PATHS), data=st.data())
def test_payloads_shaped_like_the_real_ones(client: httpx.Client, path: str, data: Any) -> None:
    doc = data.draw(SHAPED[path])
    check(client.post(path, content=json.dumps(doc), headers=AUTH))


@FUZZ
@given(path=st.sampled_from(PATHS), doc=json_values)
def test_random_json(client: httpx.Client, path: str, doc: Any) -> None:
    check(client.post(path, content=json.dumps(doc), headers=AUTH))


@FUZZ
@given(path=st.sampled_from(PATHS), body=st.binary(max_size=2048))
def test_random_bytes(client: httpx.Client, path: str, body: bytes) -> None:
    check(client.post(path, content=body, headers=AUTH))


# h11 (the client) refuses control characters and blanks at the edges of a header value.
header_text = st.text(alphabet=string.printable.replace("\r", "").replace("\n", "")
                      .replace("\x0b", "").replace("\x0c", ""), max_size=60).map(str.strip)


@FUZZ
@given(path=st.sampled_from(PATHS), content_type=header_text,
       authorization=st.sampled_from([f"Bearer {TOKEN}", "Bearer", "bearer " + TOKEN, ""])
       | header_text,
       extra=st.dictionaries(st.sampled_from(["X-Any", "Content-Encoding", "Accept", "Expect"]),
                             header_text, max_size=2))
def test_random_headers(client: httpx.Client, path: str, content_type: str, authorization: str,
                        extra: dict[str, str]) -> None:
    headers = {"Content-Type": content_type, "Authorization": authorization, **extra}
    check(client.post(path, content=b'{"events": []}', headers=headers))


@FUZZ
@given(source=header_text, at=st.none() | header_text | times)
def test_random_pod_query(client: httpx.Client, source: str, at: str | None) -> None:
    params = {"source": source} if at is None else {"source": source, "at": at}
    doc = {"kind": "List", "items": []}
    check(client.post("/v1/k8s/pods", params=params, content=json.dumps(doc), headers=AUTH))
