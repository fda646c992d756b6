"""End to end: a real ``docker-registry`` notifies a running collector, which fills the store.

Push (B's ``push_image``), pull by tag the way containerd does it (HEAD by tag, GET by digest),
pull by digest, a scanner pull and a delete by digest all arrive over the registry's own
notification queue, classified and attributed right. Then the collector goes away while the
registry keeps working: when it comes back the registry's retries deliver everything, once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from recommender import inventory
from recommender.config import load
from recommender.registry.push import push_image
from recommender.registry.sync import RegistryClient
from recommender.server import build_app
from recommender.store import Store, tables
from recommender.timeutil import utcnow
from tests.support.live_server import LiveServer

pytestmark = [pytest.mark.registry, pytest.mark.slow]

TOKEN = "e2e-token"
OCI = "application/vnd.oci.image.manifest.v1+json"
CONTAINERD = "containerd/1.7.2"
DOCKER = "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.0 os/linux arch/amd64"


def make_app(store: Store) -> Any:
    return build_app(load(env={}, overrides={"collector.token": TOKEN}), store)


def manifest_events(store: Store) -> list[Any]:
    e = tables.events.c
    with store.connect() as conn:
        return list(conn.execute(select(tables.events).where(e.usage != "blob")
                                 .order_by(e.time, e.id)).mappings())


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def collector(store: Store) -> Iterator[LiveServer]:
    server = LiveServer(make_app(store)).start()
    try:
        yield server
    finally:
        server.stop()


def pull(http: httpx.Client, repo: str, ref: str, agent: str, method: str = "GET") -> str:
    r = http.request(method, f"/v2/{repo}/manifests/{ref}",
                     headers={"Accept": OCI, "User-Agent": agent})
    r.raise_for_status()
    return r.headers["Docker-Content-Digest"]


def test_registry_notifications_arrive_classified_and_attributed(
    store: Store, collector: LiveServer, registry_factory: Any
) -> None:
    registry = registry_factory(notify_url=f"{collector.url}/v1/events/distribution",
                                notify_token=TOKEN)
    with RegistryClient(registry.url) as client:
        pushed = push_image(client, "shop/web", "v1")
    digest = pushed.digest
    with httpx.Client(base_url=registry.url) as http:
        # containerd resolves the tag with HEAD, then fetches by digest: only HEAD names the tag
        assert pull(http, "shop/web", "v1", CONTAINERD, "HEAD") == digest
        pull(http, "shop/web", digest, CONTAINERD)
        pull(http, "shop/web", digest, DOCKER)  # a pull by digest
        pull(http, "shop/web", digest, "trivy/0.50.1")  # a scanner
        wait_for(lambda: len(manifest_events(store)) == 5, "push and four pulls")
        after_pulls = utcnow()
        http.delete(f"/v2/shop/web/manifests/{digest}").raise_for_status()
    # the registry fires the manifest delete, then one tag delete per tag that pointed there
    wait_for(lambda: len(manifest_events(store)) == 7, "the delete and its tag delete")

    rows = manifest_events(store)
    seen = [(r["action"], r["method"], r["tag"], r["digest"], r["usage"]) for r in rows]
    assert seen[:5] == [
        ("push", "PUT", "v1", digest, "self"),  # B's client says tagwarden/<v>
        ("pull", "HEAD", "v1", digest, "use"),
        ("pull", "GET", None, digest, "use"),
        ("pull", "GET", None, digest, "use"),
        ("pull", "GET", None, digest, "scanner"),
    ]
    assert sorted(seen[5:], key=str) == sorted([("delete", "DELETE", None, digest, "use"),
                                                ("delete", "DELETE", "v1", None, "use")], key=str)
    assert all(r["source"] == "distribution" and r["repository"] == "shop/web" for r in rows)
    with store.connect() as conn:
        blob_events = conn.execute(text("SELECT count(*) FROM events WHERE usage = 'blob'"))
        assert blob_events.scalar_one() >= 2  # config and layer uploads: not manifest use
        # the pulls by digest are credited to the tag that pointed there at the time
        for r in rows[2:5]:
            assert inventory.current_tags(conn, at=r["time"])[("shop/web", digest)] == ["v1"]
        [item] = [i for i in inventory.list_inventory(conn, now=after_pulls)
                  if i["digest"] == digest]
        assert (item["tags"], item["uses"], item["non_use_pulls"]) == (["v1"], 3, 1)
        assert item["pushed_at"] == rows[0]["time"]
        # after the delete: the tag is closed and the manifest is gone
        assert inventory.current_tags(conn, at=utcnow()).get(("shop/web", digest)) is None
        manifest = conn.execute(select(tables.manifests)
                                .where(tables.manifests.c.digest == digest)).mappings().one()
        assert manifest["deleted_at"] is not None


def test_registry_retries_after_collector_restart_nothing_lost_nothing_doubled(
    store: Store, registry_factory: Any, request: pytest.FixtureRequest
) -> None:
    server = LiveServer(make_app(store)).start()
    port = server.port
    registry = registry_factory(notify_url=f"{server.url}/v1/events/distribution",
                                notify_token=TOKEN)
    client = RegistryClient(registry.url)
    request.addfinalizer(client.close)
    first = push_image(client, "shop/api", "v1")
    wait_for(lambda: len(manifest_events(store)) == 1, "the first push")

    server.stop()  # the collector goes away; the registry keeps serving and queueing
    with httpx.Client(base_url=registry.url) as http:
        for _ in range(3):
            pull(http, "shop/api", "v1", CONTAINERD, "HEAD")
            pull(http, "shop/api", first.digest, CONTAINERD)
        second = push_image(client, "shop/api", "v2")
        pull(http, "shop/api", second.digest, "trivy/0.50.1")
    time.sleep(1.0)  # let the registry fail a few deliveries and back off
    assert len(manifest_events(store)) == 1

    restarted = LiveServer(make_app(store), port=port).start()
    try:
        wait_for(lambda: len(manifest_events(store)) >= 9, "the queued events", timeout=30)
        time.sleep(1.5)  # anything still in flight or re-sent lands now
        rows = manifest_events(store)
        kinds = sorted((r["action"], r["method"] or "", r["tag"] or "", r["usage"]) for r in rows)
        assert kinds == sorted(
            [("push", "PUT", "v1", "self"), ("push", "PUT", "v2", "self")]
            + [("pull", "HEAD", "v1", "use")] * 3 + [("pull", "GET", "", "use")] * 3
            + [("pull", "GET", "", "scanner")]
        )
        ids = [r["source_event_id"] for r in rows]
        assert len(ids) == len(set(ids))
        health = httpx.get(f"{restarted.url}/healthz")
        assert health.json()["status"] == "ok"
    finally:
        restarted.stop()


def test_store_outage_answers_503_and_the_registry_redelivers(
    store: Store, collector: LiveServer, registry_factory: Any
) -> None:
    registry = registry_factory(notify_url=f"{collector.url}/v1/events/distribution",
                                notify_token=TOKEN)
    with store.begin() as conn:  # the store breaks under the running collector
        conn.execute(text("ALTER TABLE events RENAME TO events_away"))
    with RegistryClient(registry.url) as client:
        pushed = push_image(client, "shop/db", "v1")
    with httpx.Client(base_url=collector.url) as http:
        wait_for(lambda: "reason=\"store\"" in http.get("/metrics").text, "a 503 to the registry")
    with store.begin() as conn:
        conn.execute(text("ALTER TABLE events_away RENAME TO events"))
    wait_for(lambda: any(r["action"] == "push" for r in manifest_events(store)),
             "the redelivered push")
    [push] = [r for r in manifest_events(store) if r["action"] == "push"]
    assert (push["tag"], push["digest"]) == ("v1", pushed.digest)
