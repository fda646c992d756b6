"""Safety review of the deletion path: traps found by reading it adversarially (design.md
invariants 1-7, peers.md), each proven on the real registry and both stores."""

from __future__ import annotations

from .conftest import World
from .helpers import later


def test_an_alias_pushed_behind_our_back_is_not_deleted_with_the_digest(world: World) -> None:
    # peers.md trap 4 (aliases) and 10 (promotion): after the suggestion someone tags the
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
