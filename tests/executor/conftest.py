"""A world for executor tests: a real registry, a store (SQLite and PostgreSQL), a config."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from recommender import decisions
from recommender.config import Config
from recommender.executor import CallLog, Executor
from recommender.registry.distribution import reclaim_hint
from recommender.registry.local import LocalRegistry
from recommender.registry.push import PushedImage, push_image
from recommender.registry.sync import RegistryClient
from recommender.store import Store, dialect_insert
from recommender.store.tables import (
    blobs,
    manifest_blobs,
    manifest_children,
    manifests,
    tag_history,
)

from .helpers import T0, Suggestion, make_config

POLICY = """
[[policy]]
repositories = ["*"]
protected_tags = ["latest"]
keep_production = 0
keep_other = 0
min_age = "0s"
keep_deployed_within = "0s"
"""


@dataclass
class World:
    store: Store
    registry: LocalRegistry
    client: RegistryClient
    calls: CallLog
    config: Config
    tmp: Path

    def push(self, repo: str, tags: list[str], *, seed: object = None,
             layers: Any = (2048,), platforms: list[str] | None = None) -> PushedImage:
        """Push an image at its first tag (more tags point at the same digest) and record it
        in the store the way a scan would, pushed 30 days before T0."""
        first = tags[0] if tags else None
        image = push_image(self.client, repo, first, seed=seed or (repo, tuple(tags)),
                           layers=layers, platforms=platforms)
        manifest = self.client.get_manifest(repo, image.digest)
        for tag in tags[1:]:
            self.client.put_manifest(repo, tag, manifest.body, manifest.media_type)
        self.record(image, tags)
        return image

    def record(self, image: PushedImage, tags: list[str]) -> None:
        seen = T0 - timedelta(days=30)
        with self.store.begin() as conn:
            for m in [image, *image.children]:
                conn.execute(dialect_insert(conn, manifests).values(
                    repository=m.repository, digest=m.digest, media_type=m.media_type,
                    size=m.size, total_bytes=m.size + sum(m.blobs.values()), first_seen=seen,
                    last_scanned=seen, is_index=bool(m.children),
                ).on_conflict_do_nothing())
                for blob, size in m.blobs.items():
                    conn.execute(dialect_insert(conn, blobs).values(digest=blob, size=size)
                                 .on_conflict_do_nothing())
                    conn.execute(dialect_insert(conn, manifest_blobs).values(
                        repository=m.repository, digest=m.digest, blob=blob)
                        .on_conflict_do_nothing())
            for child in image.children:
                conn.execute(manifest_children.insert().values(
                    repository=image.repository, parent=image.digest, child=child.digest))
            for tag in tags:
                conn.execute(tag_history.insert().values(
                    repository=image.repository, tag=tag, digest=image.digest, valid_from=seen,
                    source="scan"))

    def approve(self, image: PushedImage, tags: list[str], *, hours: float = 1) -> int:
        """Suggest at T0, approve at T0 + hours; returns the item id."""
        (batch,) = decisions.record_batches(
            self.store, [Suggestion(image.repository, image.digest, tags,
                                    reclaimable_bytes=sum(image.blobs.values()))],
            now=T0, config=self.config)
        decisions.approve(self.store, batch_id=batch.id, user_id="U0ALICE",
                          now=T0 + timedelta(hours=hours))
        return batch.items[0].id

    def executor(self, **kwargs: Any) -> Executor:
        kwargs.setdefault("calls", self.calls)
        return Executor(self.store, self.client, self.config, **kwargs)

    def item(self, item_id: int) -> decisions.ItemRecord:
        with self.store.connect() as conn:
            for batch in decisions.list_batches(self.store):
                for item in batch.items:
                    if item.id == item_id:
                        return item
        del conn
        raise AssertionError(f"no item {item_id}")


def client_for(registry: LocalRegistry, calls: CallLog, **kwargs: Any) -> RegistryClient:
    kwargs.setdefault("retries", 0)
    return RegistryClient(registry.url, recorder=calls, **kwargs)


@pytest.fixture
def world(store: Store, registry: LocalRegistry, tmp_path: Path) -> Iterator[World]:
    calls = CallLog()
    extra = f'[registry]\nurl = "{registry.url}"\ngc_config = "{registry.config_path}"\n'
    cfg = make_config(tmp_path, cool_off="24h", extra=extra + POLICY)
    client = client_for(registry, calls, reclaim=reclaim_hint(cfg))
    try:
        yield World(store, registry, client, calls, cfg, tmp_path)
    finally:
        client.close()
