"""The re-check's "used since the suggestion", through the real path: a real ``docker-registry``
notifies a running collector, which classifies each pull and rolls it up; the executor reads
what the collector stored. A real client's pull blocks the deletion; a scanner's, a janitor's
and tagwarden's own (a dry run's HEADs) do not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from recommender import decisions
from recommender.config import load
from recommender.executor import CallLog, Executor
from recommender.registry.push import PushedImage, push_image
from recommender.registry.sync import RegistryClient
from recommender.server import build_app
from recommender.store import Store
from recommender.store.tables import events, rollups
from recommender.timeutil import utcnow
from tests.support.live_server import LiveServer

from .conftest import POLICY
from .helpers import Suggestion, make_config

pytestmark = [pytest.mark.registry, pytest.mark.slow]

TOKEN = "recheck-token"
OCI = "application/vnd.oci.image.manifest.v1+json"
DOCKER = "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.0 os/linux arch/amd64"


class Notified:
    """A registry whose notifications reach a collector on ``store``."""

    def __init__(self, store: Store, registry: Any, client: RegistryClient,
                 tmp: Path) -> None:
        self.store, self.registry, self.client = store, registry, client
        extra = f'[registry]\nurl = "{registry.url}"\ngc_config = "{registry.config_path}"\n'
        self.config = make_config(tmp, cool_off="1h", extra=extra + POLICY)

    def push(self, repo: str, tag: str) -> PushedImage:
        image = push_image(self.client, repo, tag, seed=(repo, tag))
        self.wait_for(lambda: self.count("push", "self") == 1, "the push")
        return image

    def count(self, action: str, usage: str) -> int:
        with self.store.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)
                                    .where(events.c.action == action)
                                    .where(events.c.usage == usage)).scalar_one())

    def rolled_up(self, usage: str) -> int:
        with self.store.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.sum(rollups.c.count), 0))
                                    .where(rollups.c.action == "pull")
                                    .where(rollups.c.usage == usage)).scalar_one())

    def approve(self, image: PushedImage, tags: list[str]) -> None:
        """Suggested now (after the push), approved at once; due after the one-hour cool-off."""
        now = utcnow()
        (batch,) = decisions.record_batches(
            self.store, [Suggestion(image.repository, image.digest, tags)], now=now,
            config=self.config)
        decisions.approve(self.store, batch_id=batch.id, user_id="U0ALICE", now=now)

    def pull(self, repo: str, ref: str, agent: str, method: str = "GET") -> None:
        with httpx.Client(base_url=self.registry.url) as http:
            r = http.request(method, f"/v2/{repo}/manifests/{ref}",
                             headers={"Accept": OCI, "User-Agent": agent})
            r.raise_for_status()

    def execute(self, *, dry_run: bool = False) -> Any:
        calls = CallLog()
        with RegistryClient(self.registry.url, recorder=calls,
                            retries=0) as client:
            executor = Executor(self.store, client, self.config, calls=calls, dry_run=dry_run)
            (outcome,) = executor.run_due(utcnow() + timedelta(hours=2)).outcomes
        return outcome

    @staticmethod
    def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.05)


@pytest.fixture
def notified(store: Store, registry_factory: Any, tmp_path: Path) -> Iterator[Notified]:
    server = LiveServer(build_app(load(env={}, overrides={"collector.token": TOKEN}),
                                  store)).start()
    try:
        registry = registry_factory(notify_url=f"{server.url}/v1/events/distribution",
                                    notify_token=TOKEN)
        with RegistryClient(registry.url) as client:
            yield Notified(store, registry, client, tmp_path)
    finally:
        server.stop()


def test_a_real_clients_pull_since_the_suggestion_blocks(notified: Notified) -> None:
    image = notified.push("payments/api", "v1")
    notified.approve(image, ["v1"])
    # containerd resolves the tag with HEAD: the event names the tag and the digest.
    notified.pull("payments/api", "v1", "containerd/1.7.2", "HEAD")
    notified.wait_for(lambda: notified.rolled_up("use") == 1, "the use in the rollups")
    outcome = notified.execute()
    assert outcome.outcome == "skipped"
    assert outcome.reason.startswith(f"used since the suggestion: pull of {image.digest} at ")
    assert notified.client.head_manifest("payments/api", image.digest) == image.digest


def test_a_pull_by_digest_since_the_suggestion_blocks(notified: Notified) -> None:
    image = notified.push("payments/api", "v1")
    notified.approve(image, ["v1"])
    notified.pull("payments/api", image.digest, DOCKER)
    notified.wait_for(lambda: notified.rolled_up("use") == 1, "the use in the rollups")
    outcome = notified.execute()
    assert (outcome.outcome, outcome.reason.split(" at ")[0]) == (
        "skipped", f"used since the suggestion: pull of {image.digest}")


def test_scanner_janitor_and_tagwardens_own_pulls_do_not_block(notified: Notified) -> None:
    image = notified.push("payments/api", "v1")
    notified.approve(image, ["v1"])
    notified.pull("payments/api", image.digest, "trivy/0.50.1")
    notified.pull("payments/api", "v1", "crane/v0.19.1", "HEAD")
    notified.pull("payments/api", image.digest, "crane/v0.19.1")
    notified.client.get_manifest("payments/api", image.digest)  # tagwarden/<version>
    # A dry run re-checks against the registry (HEAD by digest and by tag) as tagwarden.
    assert notified.execute(dry_run=True).outcome == "would_delete"
    notified.wait_for(lambda: notified.rolled_up("scanner") == 1
                      and notified.rolled_up("janitor") == 2
                      and notified.rolled_up("self") >= 3, "the non-use pulls in the rollups")
    assert notified.rolled_up("use") == 0
    outcome = notified.execute()
    assert (outcome.outcome, outcome.reason) == ("deleted", "deleted by digest")
    assert notified.client.head_manifest("payments/api", image.digest) is None
