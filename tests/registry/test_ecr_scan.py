"""The inventory scan of an Amazon ECR registry (moto's server behind tests/support/ecr), reached
through the factory with ``registry.kind = "ecr"``, into SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from recommender import inventory, registry
from recommender.config import load
from recommender.inventory.lastpull import COARSE_NOTE, SOURCE
from recommender.recommend import suggest
from recommender.registry.protocol import Reclaim
from recommender.store.tables import events, manifest_children, manifests, tag_history
from tests.support.ecr import EcrServer

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def config(ecr: EcrServer):  # type: ignore[no-untyped-def]
    return load(env={}, overrides={"registry.kind": "ecr", "registry.region": "us-east-1",
                                   "registry.endpoint_url": ecr.url})


def _scan(store, config, now):  # type: ignore[no-untyped-def]
    client = registry.open_async(config)
    try:
        return inventory.scan(store, client, now=now)
    finally:
        import asyncio

        asyncio.run(client.aclose())


def test_scan_records_images_an_index_with_children_and_a_signature(store, ecr, config) -> None:
    ecr.create_repository("team/app")
    ecr.create_repository("team/empty")
    single = ecr.push_image("team/app", "1.0", seed="one", layer_sizes=(1000, 500))
    amd = ecr.push_image("team/app", None, seed="amd")
    arm = ecr.push_image("team/app", None, seed="arm")
    index = ecr.push_index("team/app", "2.0", [(amd, "linux/amd64"), (arm, "linux/arm64")])
    signature = ecr.push_signature("team/app", index, tag="sha256-" + index.digest[7:] + ".sig")

    report = _scan(store, config, T0)

    assert report.errors == []
    assert report.repositories == 2
    assert report.manifests == 5
    assert report.registry.startswith("ecr://")
    m = manifests.c
    with store.connect() as conn:
        rows = {r.digest: r for r in conn.execute(select(manifests))}
        children = set(conn.execute(select(manifest_children.c.parent, manifest_children.c.child,
                                           manifest_children.c.platform)))
        tags = dict(conn.execute(select(tag_history.c.tag, tag_history.c.digest)
                                 .where(tag_history.c.valid_to.is_(None))).all())
        assert conn.execute(select(m.digest).where(m.is_index)).scalars().all() == [index.digest]
    assert set(rows) == {single.digest, amd.digest, arm.digest, index.digest, signature.digest}
    config_size = json.loads(single.body)["config"]["size"]
    assert rows[single.digest].total_bytes == len(single.body) + config_size + 1500
    assert rows[single.digest].created_at is not None  # ECR's push time: no config read
    assert children == {(index.digest, amd.digest, "linux/amd64"),
                        (index.digest, arm.digest, "linux/arm64")}
    assert rows[signature.digest].subject == index.digest
    assert rows[signature.digest].referrer_kind == "signature"
    assert tags == {"1.0": single.digest, "2.0": index.digest,
                    "sha256-" + index.digest[7:] + ".sig": signature.digest}
    assert registry.open(config).reclaim.kind is Reclaim.IMMEDIATE


def test_a_rescan_reads_only_new_manifests_and_marks_the_gone(store, ecr, config) -> None:
    ecr.create_repository("team/app")
    old = ecr.push_image("team/app", "1.0", seed="one")
    kept = ecr.push_image("team/app", "1.1", seed="kept")
    _scan(store, config, T0)
    ecr.moto_client().batch_delete_image(repositoryName="team/app",
                                         imageIds=[{"imageDigest": old.digest}])
    new = ecr.push_image("team/app", "1.2", seed="two")
    mark = len(ecr.calls)

    report = _scan(store, config, T0 + timedelta(hours=6))

    assert ecr.calls[mark:].count("BatchGetImage") == 1  # the new image alone
    assert report.manifests_deleted == 1
    with store.connect() as conn:
        rows = {r.digest: r for r in conn.execute(select(manifests))}
        open_tags = dict(conn.execute(select(tag_history.c.tag, tag_history.c.digest)
                                      .where(tag_history.c.valid_to.is_(None))).all())
    assert rows[old.digest].deleted_at is not None
    assert rows[kept.digest].deleted_at is None
    assert rows[kept.digest].last_scanned == T0 + timedelta(hours=6)
    assert open_tags == {"1.1": kept.digest, "1.2": new.digest}


def test_recorded_pulls_are_coarse_use_and_the_suggestion_says_so(store, ecr, config) -> None:
    ecr.create_repository("team/app")
    image = ecr.push_image("team/app", "1.0", seed="one")
    pulled = T0 - timedelta(days=200)
    ecr.record_pull("team/app", image.digest, pulled)

    _scan(store, config, T0)
    _scan(store, config, T0 + timedelta(hours=6))  # the same figure again: not a second use

    with store.connect() as conn:
        stored = conn.execute(select(events.c.time, events.c.action, events.c.usage,
                                     events.c.digest).where(events.c.source == SOURCE)).all()
    assert [(s.action, s.usage, s.digest) for s in stored] == [("pull", "use", image.digest)]
    assert stored[0].time == pulled
    items = suggest(store, config, now=T0, include_all=True)
    assert [i.digest for i in items] == [image.digest]
    assert COARSE_NOTE in items[0].reasons
