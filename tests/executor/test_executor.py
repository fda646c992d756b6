"""The executor on the real registry: cooling-off, re-checks, retries, crash safety, dry run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from recommender import decisions, fencing
from recommender.audit import AuditLog
from recommender.errors import LeaseLost, NotFound
from recommender.executor import CallLog, DueItem, Executor
from recommender.leadership import Lease
from recommender.registry.push import layer_tar, push_signature
from recommender.registry.sync import RegistryClient
from recommender.store.tables import (
    approvals,
    k8s_snapshots,
    rollups,
    running_refs,
)
from tests.support.loopback import serving

from .conftest import World
from .helpers import T0, Suggestion, later


def _tags(world: World, repo: str) -> list[str]:
    try:
        return sorted(world.client.list_tags(repo))
    except NotFound:
        return []


def test_nothing_before_cool_off_then_deleted_and_gc_frees_unshared_blobs(world: World) -> None:
    base = layer_tar("base", 4096)
    old = world.push("payments/api", ["v1", "v1.0"], layers=[base, 3000])
    keep = world.push("payments/api", ["v2"], layers=[base, 5000])
    item_id = world.approve(old, ["v1", "v1.0"], hours=1)

    early = world.executor().run_due(later(20))  # approved at +1h, due at +25h
    assert early.outcomes == []
    assert world.client.head_manifest("payments/api", old.digest) == old.digest

    report = world.executor().run_due(later(26))
    assert [(o.item_id, o.outcome) for o in report.outcomes] == [(item_id, "deleted")]
    assert world.client.head_manifest("payments/api", old.digest) is None
    assert _tags(world, "payments/api") == ["v2"]
    assert world.item(item_id).state == "deleted"
    assert report.gc_command.endswith(str(world.registry.config_path))
    assert report.finished_batches and report.reclaimable_bytes > 0

    before = world.registry.blob_files()
    world.registry.stop()
    world.registry.garbage_collect()
    world.registry.start()
    freed = before - world.registry.blob_files()
    unshared = set(old.blobs) - set(keep.blobs)
    # The manifest and its own blobs go; the shared base layer survives.
    assert len(unshared) == 2 and freed == unshared | {old.digest}
    # The figure reported before GC is what GC then freed (layer-deduplicated).
    assert report.reclaimable_bytes == old.size + sum(old.blobs[b] for b in unshared)
    assert world.client.head_manifest("payments/api", keep.digest) == keep.digest

    audit = AuditLog(world.store)
    assert audit.verify().ok
    deleted = list(audit.entries(kind="item.deleted"))
    assert len(deleted) == 1
    calls = deleted[0].data["calls"]
    assert [c["method"] for c in calls] == ["DELETE"] and calls[0]["status"] == 202
    checked = next(audit.entries(kind="item.checked")).data["calls"]
    assert {c["method"] for c in checked} == {"HEAD", "GET"}

    # A second run finds nothing due: at most once.
    assert world.executor().run_due(later(27)).outcomes == []


def test_tag_moved_is_skipped(world: World) -> None:
    old = world.push("payments/api", ["v1", "main"])
    item_id = world.approve(old, ["v1", "main"])
    moved = world.push("payments/api", ["main"], seed="newer")  # main now names another digest
    report = world.executor().run_due(later(26))
    (outcome,) = report.outcomes
    assert outcome.outcome == "skipped"
    assert outcome.reason == f"tag moved: main now points to {moved.digest}"
    assert world.client.head_manifest("payments/api", old.digest) == old.digest
    assert world.item(item_id).skipped_reason == outcome.reason


def test_a_pull_since_the_suggestion_is_skipped(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    world.approve(old, ["v1"])
    with world.store.begin() as conn:
        conn.execute(rollups.insert().values(
            day=later(3).date(), repository="payments/api", digest=old.digest, tag="v1",
            action="pull", usage="use", count=1, first_at=later(3), last_at=later(3)))
        # A later scanner pull is not use: the reason names the use, at its own time.
        # (test_recheck_uses.py runs both ways through a real registry and collector.)
        conn.execute(rollups.insert().values(
            day=later(4).date(), repository="payments/api", digest=old.digest, tag="v1",
            action="pull", usage="scanner", count=1, first_at=later(4), last_at=later(4)))
    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert outcome.outcome == "skipped"
    assert outcome.reason == (f"used since the suggestion: pull of {old.digest} at "
                              f"{later(3).isoformat()}")
    assert world.client.head_manifest("payments/api", old.digest) == old.digest


def test_a_new_pod_is_skipped(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    world.approve(old, ["v1"])
    with world.store.begin() as conn:
        snap = conn.execute(k8s_snapshots.insert().values(
            source="prod-eu", taken_at=later(10), pods=1)).inserted_primary_key[0]
        conn.execute(running_refs.insert().values(
            snapshot_id=snap, registry="registry.local", repository="payments/api",
            digest=None, tag="v1", namespace="payments", pod="api-7d9", container="api",
            container_kind="container", image="registry.local/payments/api:v1"))
    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert outcome.outcome == "skipped"
    assert outcome.reason == "runs now: payments/api-7d9 (registry.local/payments/api:v1)"


def test_a_guardrail_that_now_keeps_it_is_skipped(world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    old = world.push("payments/api", ["v1"])
    world.approve(old, ["v1"])
    world.config = world.config.__class__(
        world.config.values, world.config.teams,
        (world.config.policies[0].__class__(protected_tags=("v*",), keep_production=0,
                                            keep_other=0, min_age=timedelta(0),
                                            keep_deployed_within=timedelta(0)),),
        world.config.path)
    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert outcome.outcome == "skipped" and outcome.reason.startswith("guardrail: ")
    assert "v1" in outcome.reason


def test_registry_down_leaves_the_item_pending_and_it_is_retried(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    world.registry.stop()
    try:
        (outcome,) = world.executor().run_due(later(26)).outcomes
    finally:
        world.registry.start()
    assert outcome.outcome == "retry" and "cannot reach the registry" in outcome.reason
    item = world.item(item_id)
    assert item.state == "approved" and item.next_attempt_at == later(26) + timedelta(minutes=1)
    # Not yet time for the retry; then it is.
    assert world.executor().run_due(later(26) + timedelta(seconds=30)).outcomes == []
    (again,) = world.executor().run_due(later(26) + timedelta(minutes=2)).outcomes
    assert again.outcome == "deleted" and again.attempts == 2
    assert world.client.head_manifest("payments/api", old.digest) is None
    assert AuditLog(world.store).verify().ok


class _Unavailable(BaseHTTPRequestHandler):
    """A registry front that answers 503 to everything (an overloaded registry)."""

    def _answer(self) -> None:
        body = b'{"errors": [{"code": "UNAVAILABLE", "message": "overloaded"}]}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def unavailable() -> Iterator[str]:
    with serving(_Unavailable) as url:
        yield url


def test_server_errors_are_retried_and_finally_fail(world: World, unavailable: str) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    calls = CallLog()
    client = RegistryClient(unavailable, recorder=calls, retries=0)
    cfg = world.config.replace(executor__max_attempts=2)
    ex = Executor(world.store, client, cfg, calls=calls)
    (first,) = ex.run_due(later(26)).outcomes
    assert first.outcome == "retry" and "503" in first.reason
    assert world.item(item_id).state == "approved"
    (last,) = ex.run_due(later(30)).outcomes
    assert last.outcome == "failed" and "503" in last.reason
    assert world.item(item_id).state == "failed"
    assert world.client.head_manifest("payments/api", old.digest) == old.digest
    retry = next(AuditLog(world.store).entries(kind="item.retry"))
    assert retry.data["calls"][0]["status"] == 503


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


class CrashingExecutor(Executor):
    def after_delete(self, item: DueItem) -> None:
        raise Crash(item.id)


def test_crash_between_delete_and_record_deletes_once(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    with pytest.raises(Crash):
        CrashingExecutor(world.store, world.client, world.config, calls=world.calls,
                         worker_id="w1").run_due(later(26))
    assert world.client.head_manifest("payments/api", old.digest) is None  # DELETE happened
    item = world.item(item_id)
    assert item.state == "executing"  # ... but its result was never recorded
    # A cancel now cannot undo the started item, and must not strand it either.
    late = decisions.cancel(world.store, batch_id=item.batch_id, user_id="U0BOB",
                            now=later(26))
    assert "1 item(s) had already started" in late.message
    # Another worker before the lease expires: nothing to take.
    assert world.executor(worker_id="w2").run_due(later(26) + timedelta(minutes=1)).outcomes \
        == []
    (outcome,) = world.executor(worker_id="w2").run_due(later(26) + timedelta(minutes=6)).outcomes
    assert outcome.outcome == "deleted" and outcome.reason == "already gone"
    assert [c["method"] for c in outcome.calls] == ["HEAD"]  # no second DELETE
    audit = AuditLog(world.store)
    assert audit.verify().ok
    assert len(list(audit.entries(kind="item.deleted"))) == 1
    assert world.item(item_id).state == "deleted"


class _Monotonic:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lease(world: World) -> tuple[Lease, _Monotonic]:
    mono = _Monotonic()
    lease = Lease(world.store, "leader-a", timedelta(seconds=15), monotonic=mono)
    assert lease.acquire()
    return lease, mono


def test_a_scheduled_run_that_loses_its_lease_before_the_delete_deletes_nothing(
        world: World) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    lease, mono = _lease(world)

    class Frozen(Executor):
        def _recheck(self, item: DueItem, now: Any, kept: list[str]) -> str:
            checks = super()._recheck(item, now, kept)
            mono.now += 15.0  # the leader froze for a whole lease after its re-check
            return checks

    with fencing.fenced(lease.fence), pytest.raises(LeaseLost):
        Frozen(world.store, world.client, world.config, calls=world.calls,
               worker_id="w1").run_due(later(26))
    assert world.client.head_manifest("payments/api", old.digest) == old.digest  # no DELETE
    assert world.item(item_id).state == "executing"  # leased to w1 until its lease expires
    assert list(AuditLog(world.store).entries(kind="item.checked")) == []  # rolled back
    # The next leader's run, once w1's item lease has expired, deletes it once.
    (outcome,) = world.executor(worker_id="w2").run_due(later(26) + timedelta(minutes=6)).outcomes
    assert (outcome.item_id, outcome.outcome) == (item_id, "deleted")
    assert world.client.head_manifest("payments/api", old.digest) is None
    assert [e.data["item_id"] for e in AuditLog(world.store).entries(kind="item.deleted")] == [
        item_id]


def test_a_delete_done_is_recorded_even_if_the_lease_lapses_right_after(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    lease, mono = _lease(world)

    class FrozenAfter(Executor):
        def after_delete(self, item: DueItem) -> None:
            mono.now += 15.0

    with fencing.fenced(lease.fence):
        report = FrozenAfter(world.store, world.client, world.config, calls=world.calls,
                             worker_id="w1").run_due(later(26))
    assert not lease.holds()
    assert [(o.item_id, o.outcome) for o in report.outcomes] == [(item_id, "deleted")]
    assert world.item(item_id).state == "deleted"
    assert len(list(AuditLog(world.store).entries(kind="item.deleted"))) == 1
    assert AuditLog(world.store).verify().ok


def test_dry_run_reports_and_changes_nothing(world: World) -> None:
    a = world.push("payments/api", ["v1"])
    b = world.push("payments/api", ["v2", "main"])
    ia = world.approve(a, ["v1"])
    ib = world.approve(b, ["v2", "main"])
    world.push("payments/api", ["main"], seed="newer")
    before = (_tags(world, "payments/api"), world.registry.blob_files())
    report = world.executor(dry_run=True).run_due(later(26))
    assert sorted((o.item_id, o.outcome) for o in report.outcomes) == sorted(
        [(ia, "would_delete"), (ib, "would_skip")])
    assert report.reclaimable_bytes > 0
    assert (_tags(world, "payments/api"), world.registry.blob_files()) == before
    assert world.item(ia).state == "approved" and world.item(ib).state == "approved"
    # The real run then does what the dry run said.
    real = world.executor().run_due(later(26))
    assert sorted((o.item_id, o.outcome) for o in real.outcomes) == sorted(
        [(ia, "deleted"), (ib, "skipped")])


def test_cancel_during_cool_off_wins(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    batch_id = world.item(item_id).batch_id
    decisions.cancel(world.store, batch_id=batch_id, user_id="U0BOB", now=later(5))
    assert world.executor().run_due(later(26)).outcomes == []
    assert world.client.head_manifest("payments/api", old.digest) == old.digest


def test_index_child_pull_counts_as_use(world: World) -> None:
    idx = world.push("payments/api", ["v1"], platforms=["linux/amd64", "linux/arm64"])
    world.approve(idx, ["v1"])
    child = idx.children[1].digest
    with world.store.begin() as conn:
        conn.execute(rollups.insert().values(
            day=later(3).date(), repository="payments/api", digest=child, tag="",
            action="pull", usage="use", count=1, first_at=later(3), last_at=later(3)))
    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert outcome.outcome == "skipped" and child in outcome.reason


def test_two_workers_never_run_the_same_item(world: World, store_url: str) -> None:
    from recommender.store import open_store

    images = [world.push("payments/api", [f"v{i}"]) for i in range(12)]
    ids = {world.approve(img, [f"v{i}"]) for i, img in enumerate(images)}
    stores = [open_store(store_url) for _ in range(2)]
    reports: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work(n: int) -> None:
        calls = CallLog()
        client = RegistryClient(world.registry.url, recorder=calls, retries=0)
        try:
            barrier.wait()
            ex = Executor(stores[n], client, world.config, calls=calls, worker_id=f"w{n}",
                          workers=4)
            reports.append(ex.run_due(later(26)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.dispose()
    assert errors == []
    done = [o.item_id for r in reports for o in r.outcomes]
    assert sorted(done) == sorted(ids)  # each item ran exactly once, in one worker
    assert {o.outcome for r in reports for o in r.outcomes} == {"deleted"}
    audit = AuditLog(world.store)
    assert audit.verify().ok
    deletes = [c for e in audit.entries(kind="item.deleted") for c in e.data["calls"]
               if c["method"] == "DELETE"]
    assert len(deletes) == 12
    assert all(world.client.head_manifest("payments/api", i.digest) is None for i in images)


def test_no_recorded_approval_no_deletion(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    with world.store.begin() as conn:  # the approval row vanishes (a bad migration, a hand edit)
        conn.execute(approvals.delete())
    assert world.executor().run_due(later(26)).outcomes == []
    assert world.item(item_id).state == "approved"
    assert world.client.head_manifest("payments/api", old.digest) == old.digest


def test_untagged_manifest_is_deleted_by_digest(world: World) -> None:
    untagged = world.push("payments/api", [], seed="orphan")
    world.approve(untagged, [])
    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert outcome.outcome == "deleted"
    assert world.client.head_manifest("payments/api", untagged.digest) is None


def test_a_deploy_by_tag_through_the_collector_is_skipped(world: World) -> None:
    from recommender.collector.deploy import parse_deploys
    from recommender.collector.writer import EventWriter

    old = world.push("payments/api", ["v1"])
    world.approve(old, ["v1"])
    deploy = {"timestamp": later(5).isoformat(), "image": f"{world.registry.host}/payments/api:v1",
              "environment": "production", "cluster": "eu-1", "namespace": "payments"}
    EventWriter(world.store).write(parse_deploys(deploy), now=later(5))
    (outcome,) = world.executor().run_due(later(26)).outcomes
    assert outcome.outcome == "skipped"
    assert outcome.reason.startswith(f"used since the suggestion: deploy of {old.digest}")
    assert world.client.head_manifest("payments/api", old.digest) == old.digest


def test_a_failed_backup_means_no_delete(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    blocker = world.tmp / "not-a-directory"
    blocker.write_text("a file where the backup directory should be", encoding="utf-8")
    cfg = world.config.replace(executor__backup_dir=str(blocker / "backups"))
    (outcome,) = Executor(world.store, world.client, cfg, calls=world.calls).run_due(
        later(26)).outcomes
    assert outcome.outcome == "retry" and outcome.reason.startswith("backup: ")
    assert world.item(item_id).state == "approved"
    assert world.client.head_manifest("payments/api", old.digest) == old.digest


def _approve_together(world: World, items: list[tuple[Any, list[str]]]) -> list[int]:
    (batch,) = decisions.record_batches(
        world.store, [Suggestion(img.repository, img.digest, tags) for img, tags in items],
        now=T0, config=world.config)
    decisions.approve(world.store, batch_id=batch.id, user_id="U0ALICE", now=later(1))
    return [i.id for i in batch.items]


def test_a_signature_goes_after_its_subject(world: World) -> None:
    image = world.push("payments/api", ["v1"])
    sig = push_signature(world.client, image)
    sig_tag = image.digest.replace(":", "-") + ".sig"
    # The signature first in the batch: the executor still deletes the subject first.
    _approve_together(world, [(sig, [sig_tag]), (image, ["v1"])])
    outcomes = world.executor().run_due(later(26)).outcomes
    assert [(o.digest, o.outcome) for o in outcomes] == [
        (image.digest, "deleted"), (sig.digest, "deleted")]
    assert world.client.head_manifest("payments/api", sig.digest) is None


def test_a_signature_stays_while_its_subject_is_kept(world: World) -> None:
    image = world.push("payments/api", ["v1", "main"])
    sig = push_signature(world.client, image)
    sig_tag = image.digest.replace(":", "-") + ".sig"
    _approve_together(world, [(image, ["v1", "main"]), (sig, [sig_tag])])
    world.push("payments/api", ["main"], seed="newer")  # the subject will be skipped
    for dry_run in (True, False):
        outcomes = world.executor(dry_run=dry_run).run_due(later(26)).outcomes
        expected = "would_skip" if dry_run else "skipped"
        assert [o.outcome for o in outcomes] == [expected, expected]
        assert outcomes[1].reason == f"its subject {image.digest} is kept (referrers go only " \
            "with it)"
    assert world.client.head_manifest("payments/api", sig.digest) == sig.digest


def test_a_platform_child_stays_while_its_index_is_kept(world: World) -> None:
    idx = world.push("payments/api", ["v1"], platforms=["linux/amd64", "linux/arm64"])
    child = idx.children[0]
    _approve_together(world, [(child, []), (idx, ["v1"])])
    world.push("payments/api", ["v1"], seed="newer")  # v1 moves: the index is skipped ...
    outcomes = world.executor().run_due(later(26)).outcomes
    assert [o.digest for o in outcomes] == [idx.digest, child.digest]
    assert outcomes[0].outcome == "skipped" and outcomes[0].reason.startswith("tag moved")
    # ... so its child must stay, or pulling the index by digest breaks (manifest unknown).
    assert outcomes[1].outcome == "skipped"
    assert outcomes[1].reason == f"a platform of index {idx.digest}, which is kept"
    assert world.client.head_manifest("payments/api", child.digest) == child.digest


def test_leases_are_taken_chunk_by_chunk_as_the_run_proceeds(world: World) -> None:
    images = [world.push("payments/api", [f"v{i}"]) for i in range(3)]
    for i, img in enumerate(images):
        world.approve(img, [f"v{i}"])
    ticks = iter(range(0, 10_000, 600))  # every look at the clock: ten more minutes
    ex = world.executor(monotonic=lambda: float(next(ticks)))
    ex.lease_chunk = 1
    report = ex.run_due(later(26))
    assert [o.outcome for o in report.outcomes] == ["deleted"] * 3
    leased = [e.data for e in AuditLog(world.store).entries(kind="execute.leased")]
    assert [len(d["items"]) for d in leased] == [1, 1, 1]
    # Each lease runs from when it was taken, not from the start of the run.
    expiries = [d["lease_expires"] for d in leased]
    assert expiries == sorted(expiries) and len(set(expiries)) == 3


def test_a_worker_whose_lease_was_taken_over_records_nothing(world: World) -> None:
    old = world.push("payments/api", ["v1"])
    item_id = world.approve(old, ["v1"])
    takeover: list[Any] = []

    class Slow(Executor):
        def after_delete(self, item: DueItem) -> None:
            # This worker stalls past its lease; another one takes the item over meanwhile.
            takeover.append(world.executor(worker_id="w2").run_due(later(27)))

    (mine,) = Slow(world.store, world.client, world.config, calls=world.calls,
                   worker_id="w1").run_due(later(26)).outcomes
    (theirs,) = takeover[0].outcomes
    assert theirs.outcome == "deleted" and theirs.reason == "already gone"
    assert mine.outcome == "lost"
    assert world.item(item_id).state == "deleted"
    audit = AuditLog(world.store)
    assert len(list(audit.entries(kind="item.deleted"))) == 1 and audit.verify().ok
    # The stalled worker's DELETE is in the audit all the same.
    (lost,) = audit.entries(kind="item.lost")
    assert lost.actor == "w1" and [c["method"] for c in lost.data["calls"]] == ["DELETE"]
