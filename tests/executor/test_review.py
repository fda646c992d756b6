"""Safety review of the deletion path: traps found by reading it adversarially (docs/design.md,
invariants 1-7 and the traps), each proven on the real registry and both stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler

import httpx
import orjson
import pytest

from recommender import decisions
from recommender.audit import AuditLog
from recommender.collector.events import Event
from recommender.collector.writer import EventWriter
from recommender.executor import CallLog, DueItem, Executor
from recommender.registry.sync import RegistryClient
from recommender.store.tables import rollups
from tests.support.loopback import serving

from .conftest import World
from .helpers import Suggestion, later


def test_an_alias_pushed_behind_our_back_is_not_deleted_with_the_digest(world: World) -> None:
    # Traps 4 (aliases) and 10 (promotion): after the suggestion someone tags the
    # digest "prod" and the registry notification is lost (in-memory queue), so the store
    # does not know. Deleting by digest would take "prod" with it: the executor must ask the
    # registry which tags name the digest now, not only re-resolve the tags it was shown.
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    manifest = world.client.get_manifest("payments/api", old.digest)
    world.client.put_manifest("payments/api", "prod", manifest.body, manifest.media_type)

    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert outcome.outcome == "skipped"
    assert outcome.reason == "tagged since the suggestion: prod (found in the registry)"
    assert world.client.head_manifest("payments/api", old.digest) == old.digest
    assert world.client.resolve("payments/api", "prod") == old.digest
    assert world.item(item_id).state == "skipped"


def test_an_untagged_manifest_tagged_behind_our_back_is_kept(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, [])  # suggested untagged (the store saw "v1" move away)
    manifest = world.client.get_manifest("payments/api", old.digest)
    world.client.put_manifest("payments/api", "hotfix", manifest.body, manifest.media_type)
    world.client.put_manifest("payments/api", "v1", *_other(world))

    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert outcome.outcome == "skipped"
    assert outcome.reason == "tagged since the suggestion: hotfix (found in the registry)"
    assert world.item(item_id).state == "skipped"


def _other(world: World) -> tuple[bytes, str]:
    other = world.push("payments/api", ["other"], seed="other")
    manifest = world.client.get_manifest("payments/api", other.digest)
    return manifest.body, manifest.media_type


class _RateLimitedDeletes(BaseHTTPRequestHandler):
    """A front of the real registry that answers DELETE with 429 and ``Retry-After`` (Docker
    Hub and registries behind API gateways do; docker-registry itself never does)."""

    upstream = ""
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        with httpx.Client() as http:
            answer = http.request(self.command, self.upstream + self.path,
                                  headers={k: v for k, v in self.headers.items()
                                           if k.lower() in ("accept", "content-type")})
        self.send_response(answer.status_code)
        for name in ("content-type", "docker-content-digest", "link"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.content)

    def do_DELETE(self) -> None:  # noqa: N802
        body = b'{"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}'
        self.send_response(429)
        self.send_header("Retry-After", "600")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rate_limited(world: World) -> Iterator[str]:
    handler = type("Handler", (_RateLimitedDeletes,), {"upstream": world.registry.url})
    with serving(handler) as url:
        yield url


def test_a_429_on_delete_waits_at_least_its_retry_after(world: World, rate_limited: str) -> None:
    # Trap 12: a rate-limited DELETE leaves the item pending, and the next attempt comes
    # no sooner than the registry asked (10 minutes), not after our own 1-minute backoff.
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    calls = CallLog()
    client = RegistryClient(rate_limited, recorder=calls, retries=0)
    try:
        (outcome,) = Executor(world.store, client, world.config,
                              calls=calls).run_due(later(26)).outcomes
    finally:
        client.close()
    assert outcome.outcome == "retry" and "429" in outcome.reason
    item = world.item(item_id)
    assert item.state == "approved"
    assert item.next_attempt_at == later(26) + timedelta(seconds=600)
    assert world.client.head_manifest("payments/api", old.digest) == old.digest
    retry = next(AuditLog(world.store).entries(kind="item.retry"))
    assert retry.data["calls"][-1] == {"method": "DELETE", "url": retry.data["calls"][-1]["url"],
                                       "status": 429, "retry_after": 600.0}
    # Not before the registry's time; then it goes through the real registry.
    assert world.executor().run_due(later(26) + timedelta(minutes=5)).outcomes == []
    (again,) = world.executor().run_due(later(26) + timedelta(minutes=11)).outcomes
    assert again.outcome == "deleted"


def test_a_deploy_by_a_tag_the_store_could_not_resolve_counts_as_use(world: World) -> None:
    # A deploy that names only "v1", written while the tag history did not know where v1
    # pointed (its rollup has no digest): it still says v1 is wanted since the suggestion.
    old = world.push("payments/api", ["v1"])
    world.approve(old, ["v1"])
    with world.store.begin() as conn:
        conn.execute(rollups.insert().values(
            day=later(3).date(), repository="payments/api", digest="", tag="v1",
            action="deploy", usage="use", count=1, first_at=later(3), last_at=later(3)))
    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert outcome.outcome == "skipped"
    assert outcome.reason == f"used since the suggestion: deploy of v1 at {later(3).isoformat()}"
    assert world.client.head_manifest("payments/api", old.digest) == old.digest


def test_an_approved_item_is_not_proposed_again_while_cooling_off(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    again = decisions.record_batches(
        world.store, [Suggestion("payments/api", old.digest, ["v1"])], now=later(2),
        config=world.config)
    assert again == []
    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert (outcome.item_id, outcome.outcome) == (item_id, "deleted")


class _CancelledMidRun(Executor):
    """A Cancel click lands while the executor re-checks an item it has leased."""

    def _recheck(self, item: DueItem, now: datetime, kept: list[str]) -> str:
        found = super()._recheck(item, now, kept)
        decisions.cancel(self.store, batch_id=item.batch_id, user_id="U0DAVE", now=now)
        return found


def test_a_cancel_that_lands_before_the_delete_stops_it(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    (outcome,) = _CancelledMidRun(world.store, world.client, world.config,
                                  calls=world.calls).run_due(later(26)).outcomes
    assert outcome.outcome == "skipped"
    assert outcome.reason == "cancelled by U0DAVE before its delete"
    assert world.client.head_manifest("payments/api", old.digest) == old.digest
    assert world.item(item_id).state == "skipped"
    assert decisions.get_batch(world.store, world.item(item_id).batch_id).state == "cancelled"
    assert AuditLog(world.store).verify().ok


def _write(world: World, event: Event) -> None:
    EventWriter(world.store).write([event], now=event.time)


def test_an_alias_the_collector_saw_pushed_since_the_suggestion_is_kept(world: World) -> None:
    # A replication job (not use) tags the digest "prod"; its notification arrives.
    old = world.push("payments/api", ["v1"])
    world.approve(old, ["v1"])
    manifest = world.client.get_manifest("payments/api", old.digest)
    world.client.put_manifest("payments/api", "prod", manifest.body, manifest.media_type)
    _write(world, Event(time=later(4), source="distribution", source_event_id="push-prod",
                        action="push", usage="replication", repository="payments/api",
                        digest=old.digest, tag="prod", media_type=manifest.media_type))
    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert (outcome.outcome, outcome.reason) == ("skipped", "tagged since the suggestion: prod")
    assert world.client.resolve("payments/api", "prod") == old.digest


def test_a_pull_by_the_tag_of_an_alias_counts_as_use(world: World) -> None:
    # "v1.0" and "v1" name one digest; a client pulls "v1.0" by tag (the event names the tag;
    # the writer finds the digest in the tag history).
    old = world.push("payments/api", ["v1", "v1.0"])
    world.approve(old, ["v1", "v1.0"])
    _write(world, Event(time=later(6), source="deploy", source_event_id="pull-alias",
                        action="pull", usage="use", repository="payments/api", tag="v1.0",
                        user_agent="containerd/1.7"))
    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert outcome.outcome == "skipped"
    assert outcome.reason == (f"used since the suggestion: pull of {old.digest} at "
                              f"{later(6).isoformat()}")
    assert sorted(world.client.list_tags("payments/api")) == ["v1", "v1.0"]


def test_a_dry_run_sees_the_registry_alias_as_the_real_run_does(world: World) -> None:
    # Trap 8: the dry run must not promise a deletion the real run would refuse.
    old = world.push("payments/api", ["v1"])
    world.approve(old, ["v1"])
    manifest = world.client.get_manifest("payments/api", old.digest)
    world.client.put_manifest("payments/api", "prod", manifest.body, manifest.media_type)
    (dry,) = world.executor(dry_run=True).run_due(later(26)).outcomes
    (real,) = world.executor().run_due(later(26)).outcomes
    assert (dry.outcome, real.outcome) == ("would_skip", "skipped")
    assert dry.reason == real.reason


def test_an_image_that_became_a_platform_of_a_new_tagged_index_is_kept(world: World) -> None:
    # Trap 2: after the suggestion, a multi-arch release reuses the very same image as its
    # linux/amd64 platform (reproducible builds) and is tagged "v2"; the scan has not seen the
    # index yet. Deleting the image would make "v2" answer `manifest unknown` on amd64.
    old = world.push("payments/api", ["old"])
    item_id = world.approve(old, ["old"])
    index = orjson.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": old.media_type, "digest": old.digest, "size": old.size,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    })
    parent = world.client.put_manifest("payments/api", "v2", index,
                                       "application/vnd.oci.image.index.v1+json")
    (dry,) = world.executor(dry_run=True).run_due(later(26)).outcomes
    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert (dry.outcome, outcome.outcome) == ("would_skip", "skipped")
    assert outcome.reason == f"a platform of index {parent} (tag v2), which is kept"
    assert world.client.get_manifest("payments/api", "v2").digest == parent
    assert world.client.head_manifest("payments/api", old.digest) == old.digest
    assert world.item(item_id).state == "skipped"


def test_a_platform_goes_when_its_index_goes_in_the_same_run(world: World) -> None:
    # The index and its platforms approved together: the index first, then its platforms,
    # even though the registry's tag list read at the start of the run still named the index.
    idx = world.push("payments/api", ["v1"], platforms=["linux/amd64", "linux/arm64"])
    (batch,) = decisions.record_batches(world.store, [
        Suggestion("payments/api", idx.digest, ["v1"]),
        *[Suggestion("payments/api", c.digest, []) for c in idx.children]],
        now=later(0), config=world.config)
    decisions.approve(world.store, batch_id=batch.id, user_id="U0ALICE", now=later(1))
    report = world.executor().run_due(later(26))
    assert sorted(o.outcome for o in report.outcomes) == ["deleted"] * 3
    assert all(world.client.head_manifest("payments/api", m.digest) is None
               for m in [idx, *idx.children])
