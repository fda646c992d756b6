"""The inventory scan against the real docker-registry, into SQLite and PostgreSQL, and the
read-side queries (reclaimable bytes checked against what garbage collection really frees)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from recommender import inventory
from recommender.collector.events import Event, PodSnapshot, RunningRef
from recommender.collector.writer import EventWriter
from recommender.errors import RegistryError
from recommender.registry.aio import AsyncRegistryClient
from recommender.registry.local import free_port
from recommender.registry.push import layer_tar, push_image, push_referrer, push_signature
from recommender.registry.sync import RegistryClient
from recommender.store.tables import (
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    rollups,
    scans,
    tag_history,
)

pytestmark = pytest.mark.registry

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CREATED = datetime(2025, 12, 24, 8, 30, tzinfo=UTC)


@pytest.fixture
def client(registry):
    with RegistryClient(registry.url) as c:
        yield c


class Recording(httpx.AsyncHTTPTransport):
    """The real transport, keeping the paths it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await super().handle_async_request(request)


class FailingFor(httpx.AsyncHTTPTransport):
    """The real transport, except that one path answers 503 (an overloaded registry)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self.path:
            return httpx.Response(503, json={"errors": [{"code": "UNAVAILABLE"}]})
        return await super().handle_async_request(request)


def run_scan(store, registry, *, now, transport=None, **kwargs):
    async def go():
        async with AsyncRegistryClient(registry.url, transport=transport,
                                       retries=0) as aclient:
            return await inventory.scan_async(store, aclient, now=now, **kwargs)

    return asyncio.run(go())


def rows(store, table, *where):
    with store.connect() as conn:
        return [r._asdict() for r in conn.execute(select(table).where(*where))]


def open_tags(store, repo):
    th = tag_history.c
    return {r["tag"]: r["digest"] for r in rows(store, tag_history, th.repository == repo,
                                                 th.valid_to.is_(None))}


def test_scan_records_manifests_children_blobs_referrers_and_tags(store, registry, client):
    app = push_image(client, "team/app", "v1", layers=(1000, 2000), created=CREATED,
                     labels={"team": "payments"})
    multi = push_image(client, "team/app", "multi", platforms=["linux/amd64", "linux/arm64"])
    sig = push_signature(client, app)
    sbom = push_referrer(client, app)
    push_image(client, "other/svc", "1.0", layers=(500,))

    report = run_scan(store, registry, now=T0, concurrency=4)
    assert report.errors == [] and report.repositories == 2
    assert report.tags == 5 and report.tags_opened == 5
    # app, multi + 2 children, sig, the referrers index, sbom; other/svc 1.0
    assert report.manifests == 8

    m = manifests.c
    got = {r["digest"]: r for r in rows(store, manifests, m.repository == "team/app")}
    assert got[app.digest]["created_at"] == CREATED
    assert got[app.digest]["labels"] == {"team": "payments"}
    assert got[app.digest]["platform"] == "linux/amd64"
    assert got[app.digest]["size"] == app.size
    assert got[app.digest]["total_bytes"] == app.size + sum(app.blobs.values())
    assert got[app.digest]["first_seen"] == got[app.digest]["last_scanned"] == T0
    assert got[multi.digest]["is_index"] and not got[app.digest]["is_index"]
    assert got[multi.digest]["total_bytes"] == multi.size + sum(
        c.size + sum(c.blobs.values()) for c in multi.children)
    assert (got[sig.digest]["subject"], got[sig.digest]["referrer_kind"]) == (
        app.digest, "signature")
    assert (got[sbom.digest]["subject"], got[sbom.digest]["referrer_kind"]) == (app.digest, "sbom")

    mc = manifest_children.c
    children = {(r["child"], r["platform"]) for r in rows(store, manifest_children,
                                                          mc.parent == multi.digest)}
    assert children == {(multi.children[0].digest, "linux/amd64"),
                        (multi.children[1].digest, "linux/arm64")}
    linked = {r["blob"] for r in rows(store, manifest_blobs, manifest_blobs.c.digest == app.digest)}
    assert linked == set(app.blobs)
    sizes = {r["digest"]: r["size"] for r in rows(store, blobs)}
    assert all(sizes[d] == s for d, s in app.blobs.items())

    assert open_tags(store, "team/app") == {
        "v1": app.digest, "multi": multi.digest,
        app.digest.replace(":", "-") + ".sig": sig.digest,
        app.digest.replace(":", "-"): next(d for d, r in got.items()
                                          if r["is_index"] and d != multi.digest),
    }
    assert all(r["source"] == "scan" for r in rows(store, tag_history))
    (record,) = rows(store, scans)
    assert record["tags"] == 5 and record["manifests"] == 8 and record["finished_at"] >= T0

    # A re-scan reads manifests again (tags move) but not the immutable config blobs.
    transport = Recording()
    again = run_scan(store, registry, now=T0 + timedelta(days=1), transport=transport)
    assert again.errors == [] and again.tags_opened == again.tags_closed == 0
    assert not [p for p in transport.paths if "/blobs/" in p]
    assert any("/manifests/" in p for p in transport.paths)
    row = rows(store, manifests, m.digest == app.digest)[0]
    assert (row["created_at"], row["labels"], row["platform"]) == (
        CREATED, {"team": "payments"}, "linux/amd64")
    assert row["first_seen"] == T0 and row["last_scanned"] == T0 + timedelta(days=1)


def test_rescan_reconciles_with_telemetry(store, registry, client):
    old = push_image(client, "team/app", "v1", seed="old")
    gone = push_image(client, "team/app", "tmp")
    # Telemetry saw the first push of v1 an hour before the first scan.
    EventWriter(store).write([Event(
        time=T0 - timedelta(hours=1), source="distribution", source_event_id="e1",
        action="push", usage="self", repository="team/app", digest=old.digest, tag="v1",
        media_type=old.media_type, size=old.size)], now=T0)
    run_scan(store, registry, now=T0)

    # Then, unseen by telemetry: v1 moves, tmp's manifest is deleted, an untagged manifest
    # stays reachable by digest only (its tag moved away).
    untagged = push_image(client, "team/app", "keep", seed="u1")
    t1 = T0 + timedelta(hours=1)
    run_scan(store, registry, now=t1)
    new = push_image(client, "team/app", "v1", seed="new")
    push_image(client, "team/app", "keep", seed="u2")
    client.delete_manifest("team/app", gone.digest)
    t2 = T0 + timedelta(hours=2)
    report = run_scan(store, registry, now=t2)

    assert report.manifests_deleted == 1 and report.tags_closed == 3 and report.tags_opened == 2
    assert open_tags(store, "team/app")["v1"] == new.digest
    th = tag_history.c
    v1 = sorted(rows(store, tag_history, th.tag == "v1"), key=lambda r: r["valid_from"])
    assert [(r["digest"], r["valid_from"], r["valid_to"], r["source"]) for r in v1] == [
        (old.digest, T0 - timedelta(hours=1), t2, "push"),  # telemetry's interval, kept
        (new.digest, t2, None, "scan"),
    ]
    state = {r["digest"]: r for r in rows(store, manifests)}
    assert state[gone.digest]["deleted_at"] == t2
    assert state[untagged.digest]["deleted_at"] is None  # untagged is not gone
    assert state[untagged.digest]["last_scanned"] == t2
    assert state[old.digest]["first_seen"] == T0 - timedelta(hours=1)  # telemetry's push time
    with store.connect() as conn:
        assert inventory.current_tags(conn, at=t1)[("team/app", old.digest)] == ["v1"]
        assert ("team/app", old.digest) not in inventory.current_tags(conn, at=t2)
        assert ("team/app", untagged.digest) not in inventory.current_tags(conn, at=t2)


def test_reclaimable_bytes_equals_what_gc_frees(store, registry, client):
    base = layer_tar("shared-base", 8192)
    doomed = push_image(client, "team/app", "old", layers=(base, 3000))
    push_image(client, "team/app", "new", layers=(base, 4000))
    # Same manifest in a second repository: its blobs (and JSON) stay.
    twin = push_image(client, "team/app", "twin", layers=(5000,), seed="twin")
    push_image(client, "mirror/app", "twin", layers=(5000,), seed="twin", mount_from="team/app")
    multi = push_image(client, "team/multi", "1.0", platforms=["linux/amd64", "linux/arm64"],
                       layers=(base, 2500))
    run_scan(store, registry, now=T0)

    keys = [("team/app", doomed.digest), ("team/app", twin.digest), ("team/multi", multi.digest)]
    with store.connect() as conn:
        expected = inventory.reclaimable_bytes(conn, keys)
        assert inventory.reclaimable_bytes(conn, []) == 0
        # The index alone frees its children (untagged, no other parent) with it.
        alone = inventory.reclaimable_bytes(conn, [("team/multi", multi.digest)])
        assert alone == multi.size + sum(c.size + c.blobs[_own_layer(c, base)] + _config(c)
                                         for c in multi.children)

    sizes = _blob_sizes(registry.storage)
    for repo, digest in keys:
        client.delete_manifest(repo, digest)
    for child in multi.children:  # Distribution 2.8 GC keeps untagged children otherwise
        client.delete_manifest("team/multi", child.digest)
    registry.stop()
    registry.garbage_collect()
    freed = set(sizes) - registry.blob_files()
    assert freed and expected == sum(sizes[d] for d in freed)
    assert twin.digest not in freed


def _blob_sizes(storage: Path) -> dict[str, int]:
    base = storage / "docker/registry/v2/blobs"
    return {f"{p.parent.parent.parent.name}:{p.parent.name}": p.stat().st_size
            for p in base.glob("*/*/*/data")}


def _own_layer(child, base: bytes) -> str:
    from recommender.registry.models import digest_of

    return next(d for d, s in child.blobs.items()
                if d != digest_of(base) and s > 2000)


def _config(child) -> int:
    return min(child.blobs.values())


def test_read_side_usage_running_and_time_versioned_tags(store, registry, client):
    used = push_image(client, "team/app", "v1")
    idle = push_image(client, "team/app", "v2")
    multi = push_image(client, "team/app", "multi", platforms=["linux/amd64", "linux/arm64"])
    run_scan(store, registry, now=T0)
    writer = EventWriter(store)
    t = T0 + timedelta(days=1)
    events = [
        Event(time=t, source="distribution", source_event_id="p1", action="pull", usage="use",
              repository="team/app", digest=used.digest, tag="v1", user_agent="docker/24"),
        Event(time=t + timedelta(hours=2), source="distribution", source_event_id="p2",
              action="pull", usage="use", repository="team/app", tag="v1"),  # tag only
        Event(time=t, source="distribution", source_event_id="s1", action="pull",
              usage="scanner", repository="team/app", digest=idle.digest,
              user_agent="trivy/0.50"),
        Event(time=t, source="distribution", source_event_id="x1", action="push", usage="use",
              repository="team/new", digest="sha256:" + "e" * 64, tag="1",
              media_type="application/vnd.oci.image.manifest.v1+json", size=400),
    ]
    writer.write(events, now=t)
    writer.write_snapshot(PodSnapshot(source="prod", taken_at=t, pods=2, refs=[
        RunningRef(registry=registry.host, repository="team/app", image="x",
                   digest=multi.children[1].digest),
        RunningRef(registry=registry.host, repository="team/app", image="team/app:v1",
                   tag="v1"),
    ]))
    writer.write_snapshot(PodSnapshot(source="prod", taken_at=t + timedelta(days=1), pods=0))
    later = t + timedelta(hours=3)

    with store.connect() as conn:
        inv = {r["digest"]: r for r in inventory.list_inventory(conn, now=later)}
        assert inventory.running_digests(conn, at=later) == {
            ("team/app", multi.children[1].digest), ("team/app", used.digest)}
        assert inventory.running_digests(conn, at=t + timedelta(days=2)) == set()
        assert inventory.running_digests(conn, at=later, registries={"elsewhere"}) == set()
        assert inventory.running_digests(conn, at=t - timedelta(seconds=1)) == set()
        only_new = inventory.list_inventory(conn, now=later, repository_glob="team/n*")
    assert inv[used.digest]["uses"] == 2
    assert inv[used.digest]["last_used_at"] == t + timedelta(hours=2)
    assert inv[used.digest]["tags"] == ["v1"] and inv[used.digest]["running"]
    assert inv[idle.digest]["uses"] == 0 and inv[idle.digest]["non_use_pulls"] == 1
    assert inv[idle.digest]["last_used_at"] is None and not inv[idle.digest]["running"]
    assert inv[multi.digest]["running"]  # through its arm64 child
    assert inv[idle.digest]["bytes"] == idle.size + sum(idle.blobs.values())
    assert inv[idle.digest]["pushed_at"] == T0  # first sighting by the scan
    assert [r["repository"] for r in only_new] == ["team/new"]
    assert only_new[0]["bytes"] is None and only_new[0]["pushed_at"] == t  # not scanned
    with store.connect() as conn:
        assert sum(r["count"] for r in conn.execute(select(rollups)).mappings()) == 4


def test_scan_of_a_registry_that_is_down_fails_cleanly(store):
    async def go():
        async with AsyncRegistryClient(f"http://127.0.0.1:{free_port()}", retries=0) as c:
            return await inventory.scan_async(store, c, now=T0)

    with pytest.raises(RegistryError) as err:
        asyncio.run(go())
    assert err.value.temporary
    assert rows(store, manifests) == []


def test_scan_limited_by_repository_glob(store, registry, client):
    push_image(client, "team/app", "v1")
    push_image(client, "other/svc", "v1")
    report = run_scan(store, registry, now=T0, repository_glob="team/*")
    assert report.repositories == 1
    assert {r["repository"] for r in rows(store, manifests)} == {"team/app"}


def test_the_sync_scan_can_reuse_one_client(store, registry, client):
    # inventory.scan runs an event loop per call; the client's connections must not outlive
    # it (a second scan on a dead loop's connection would fail).
    push_image(client, "team/app", "v1")
    aclient = AsyncRegistryClient(registry.url, retries=0)
    first = inventory.scan(store, aclient, now=T0, concurrency=2)
    push_image(client, "team/app", "v2")
    second = inventory.scan(store, aclient, now=T0 + timedelta(hours=1), concurrency=2)
    asyncio.run(aclient.aclose())
    assert (first.errors, second.errors) == ([], [])
    assert (first.tags_opened, second.tags_opened) == (1, 1)


def test_scan_without_configs_then_with(store, registry, client):
    image = push_image(client, "team/app", "v1", created=CREATED, labels={"a": "b"})
    transport = Recording()
    run_scan(store, registry, now=T0, transport=transport, read_configs=False)
    assert not [p for p in transport.paths if "/blobs/" in p]
    row = rows(store, manifests, manifests.c.digest == image.digest)[0]
    assert row["created_at"] is None and row["total_bytes"] == image.size + sum(
        image.blobs.values())  # sizes come from the manifest itself

    run_scan(store, registry, now=T0 + timedelta(hours=1))
    row = rows(store, manifests, manifests.c.digest == image.digest)[0]
    assert (row["created_at"], row["labels"]) == (CREATED, {"a": "b"})


def test_a_tag_that_cannot_be_read_keeps_what_the_store_knew(store, registry, client):
    push_image(client, "team/app", "v1")
    v2 = push_image(client, "team/app", "v2")
    run_scan(store, registry, now=T0)
    report = run_scan(store, registry, now=T0 + timedelta(hours=1),
                      transport=FailingFor("/v2/team/app/manifests/v2"))
    assert [(e["tag"], e["status"]) for e in report.errors] == [("v2", 503)]
    assert report.tags_closed == 0
    assert open_tags(store, "team/app")["v2"] == v2.digest
    assert rows(store, manifests, manifests.c.digest == v2.digest)[0]["deleted_at"] is None


def test_each_config_is_read_once_per_scan_and_a_failed_one_costs_only_its_fields(
        store, registry, client):
    # The same image in two repositories and under two tags: one config digest, read once,
    # and every manifest that names it gets what it says.
    shared = push_image(client, "team/app", "v1", created=CREATED, labels={"k": "v"},
                        seed="shared")
    push_image(client, "team/app", "also-v1", created=CREATED, labels={"k": "v"}, seed="shared")
    push_image(client, "team/copy", "v1", created=CREATED, labels={"k": "v"}, seed="shared")
    broken = push_image(client, "team/other", "v1", created=CREATED, seed="broken")
    config_path = lambda repo, image: (  # noqa: E731
        f"/v2/{repo}/blobs/" + client.get_manifest(repo, image.digest).config["digest"])
    failing = config_path("team/other", broken)

    class Recorded(FailingFor):
        def __init__(self) -> None:
            super().__init__(failing)
            self.paths: list[str] = []

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            self.paths.append(request.url.path)
            return await super().handle_async_request(request)

    transport = Recorded()
    report = run_scan(store, registry, now=T0, transport=transport, concurrency=4)
    assert report.errors == [] and report.tags == 4
    shared_config = config_path("team/app", shared).rsplit("/", 1)[1]
    assert sum(p.endswith(shared_config) for p in transport.paths) == 1
    assert failing in transport.paths
    for repo in ("team/app", "team/copy"):
        row = rows(store, manifests, manifests.c.repository == repo)[0]
        assert (row["digest"], row["created_at"], row["labels"]) == (
            shared.digest, CREATED, {"k": "v"})
    row = rows(store, manifests, manifests.c.repository == "team/other")[0]
    assert (row["digest"], row["created_at"], row["total_bytes"]) == (
        broken.digest, None, broken.size + sum(broken.blobs.values()))
