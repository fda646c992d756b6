"""Decisions on both stores: idempotent recording, atomic approvals, the two-person rule."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from recommender import decisions
from recommender.audit import AuditLog
from recommender.errors import DecisionError
from recommender.store.tables import tag_history
from recommender.training import read_feedback

from .helpers import T0, Suggestion, digest, later, make_config


def _record(store, cfg, n=3, repo="payments/api", now=T0):  # type: ignore[no-untyped-def]
    sugg = [Suggestion(repo, digest(i), [f"v{i}"]) for i in range(n)]
    return decisions.record_batches(store, sugg, now=now, config=cfg)


def test_record_groups_per_team_repo_kind_and_is_idempotent(store, tmp_path):  # type: ignore[no-untyped-def]
    cfg = make_config(tmp_path)
    sugg = [
        Suggestion("payments/api", digest(1), ["v1"]),
        Suggestion("payments/api", digest(2), ["v2", "rc2"]),
        Suggestion("payments/api", digest(3), [], kind="untagged"),
        Suggestion("payments/web", digest(4), ["v4"]),
        Suggestion("payments/api", digest(5), ["v5"], blocked_by=["running"]),
        Suggestion("payments/api", digest(6), ["v6"], suggested=False),
        Suggestion("nobody/owns", digest(7), ["v7"]),
    ]
    created = decisions.record_batches(store, sugg, now=T0, config=cfg)
    got = sorted((b.repository, b.kind, sorted(i.digest for i in b.items)) for b in created)
    assert got == [
        ("payments/api", "release", [digest(1), digest(2)]),
        ("payments/api", "untagged", [digest(3)]),
        ("payments/web", "release", [digest(4)]),
    ]
    batch = next(b for b in created if b.kind == "release" and b.repository == "payments/api")
    assert batch.team == "payments" and batch.channel == "C0PAY" and batch.state == "pending"
    assert [i.tags for i in batch.items] == [("v1",), ("v2", "rc2")]
    assert batch.reclaimable_bytes == 2000
    # The same suggestions again: everything is already pending.
    assert decisions.record_batches(store, sugg, now=later(1), config=cfg) == []
    assert len(decisions.list_batches(store)) == 3
    kinds = [e.kind for e in AuditLog(store).entries()]
    assert kinds.count("batch.recorded") == 3
    assert AuditLog(store).verify().ok


def test_members_of_a_unit_are_recorded_with_it(store, tmp_path):  # type: ignore[no-untyped-def]
    """An index's platforms and an image's signature are decided and deleted with it."""
    cfg = make_config(tmp_path)
    index, child, sig = digest(1), digest(2), digest(3)
    sig_tag = "sha256-" + index.removeprefix("sha256:") + ".sig"
    with store.begin() as conn:
        conn.execute(tag_history.insert(), [
            {"repository": "payments/api", "tag": sig_tag, "digest": sig,
             "valid_from": T0 - timedelta(days=9), "valid_to": None, "source": "push"},
        ])
    sugg = [Suggestion("payments/api", index, ["v1"], members=[child, sig])]
    (batch,) = decisions.record_batches(store, sugg, now=T0, config=cfg)
    items = {i.digest: i for i in batch.items}
    assert set(items) == {index, child, sig}
    assert items[sig].tags == (sig_tag,) and items[child].tags == ()
    assert f"goes with {index}" in items[child].reasons[0]
    recorded = [e for e in AuditLog(store).entries() if e.kind == "batch.recorded"]
    assert [d for d, _ in recorded[0].data["items"]] == [index, child, sig]
    # Suggested again (say as its own unit): a member already pending is not proposed twice.
    assert decisions.record_batches(store, [Suggestion("payments/api", sig, [sig_tag])],
                                    now=later(1), config=cfg) == []


def test_approve_moves_pending_to_approved_once(store, tmp_path):  # type: ignore[no-untyped-def]
    cfg = make_config(tmp_path, cool_off="24h")
    (batch,) = _record(store, cfg)
    first = decisions.approve(store, batch_id=batch.id, user_id="U0ALICE", now=later(1))
    assert first.changed and first.state == "approved"
    assert first.due_at == later(25)
    again = decisions.approve(store, batch_id=batch.id, user_id="U0ALICE", now=later(2))
    assert not again.changed and again.state == "approved" and "already" in again.message
    stored = decisions.get_batch(store, batch.id)
    assert {i.state for i in stored.items} == {"approved"}
    assert {i.due_at for i in stored.items} == {later(25)}
    assert stored.approvals == ("U0ALICE",)


def test_two_person_rule_needs_distinct_users(store, tmp_path):  # type: ignore[no-untyped-def]
    cfg = make_config(tmp_path, min_approvals=2)
    (batch,) = _record(store, cfg)
    one = decisions.approve(store, batch_id=batch.id, user_id="U0ALICE", now=later(1))
    assert not one.changed and one.state == "pending" and "1 of 2" in one.message
    same = decisions.approve(store, batch_id=batch.id, user_id="U0ALICE", now=later(2))
    assert not same.changed and same.approvals == ("U0ALICE",)
    two = decisions.approve(store, batch_id=batch.id, user_id="U0BOB", now=later(3))
    assert two.changed and two.state == "approved" and two.approvals == ("U0ALICE", "U0BOB")
    assert two.due_at == later(27)


def test_review_items_drops_the_others(store, tmp_path):  # type: ignore[no-untyped-def]
    cfg = make_config(tmp_path)
    (batch,) = _record(store, cfg)
    keep = [batch.items[0].id, batch.items[2].id]
    with pytest.raises(DecisionError, match="not an open item"):
        decisions.approve(store, batch_id=batch.id, user_id="U0ALICE", now=later(1),
                          item_ids=[*keep, 99999])
    assert decisions.get_batch(store, batch.id).state == "pending"  # nothing changed
    res = decisions.approve(store, batch_id=batch.id, user_id="U0ALICE", now=later(1),
                            item_ids=keep)
    assert res.changed
    states = [i.state for i in decisions.get_batch(store, batch.id).items]
    assert states == ["approved", "dropped", "approved"]


def test_deny_snooze_cancel(store, tmp_path):  # type: ignore[no-untyped-def]
    cfg = make_config(tmp_path)
    b1 = _record(store, cfg, repo="payments/a")[0]
    b2 = _record(store, cfg, repo="payments/b")[0]
    b3 = _record(store, cfg, repo="payments/c")[0]
    denied = decisions.deny(store, batch_id=b1.id, user_id="U0BOB", now=later(1),
                            reason="still used by the batch job")
    assert denied.changed and denied.state == "denied"
    assert decisions.approve(store, batch_id=b1.id, user_id="U0ALICE", now=later(2)).state \
        == "denied"
    with pytest.raises(DecisionError, match="future"):
        decisions.snooze(store, batch_id=b2.id, user_id="U0BOB", now=later(1), until=T0)
    snoozed = decisions.snooze(store, batch_id=b2.id, user_id="U0BOB", now=later(1),
                               until=later(48))
    assert snoozed.state == "snoozed"
    decisions.approve(store, batch_id=b3.id, user_id="U0ALICE", now=later(1))
    cancelled = decisions.cancel(store, batch_id=b3.id, user_id="U0BOB", now=later(2))
    assert cancelled.changed and cancelled.state == "cancelled"
    assert {i.state for i in decisions.get_batch(store, b3.id).items} == {"cancelled"}
    with pytest.raises(DecisionError, match="no batch"):
        decisions.cancel(store, batch_id="nope", user_id="U0BOB", now=later(2))
    # Denied digests stay quiet; snoozed ones come back after the snooze.
    again = [Suggestion(r, digest(i), [f"v{i}"]) for r in ("payments/a", "payments/b")
             for i in range(3)]
    assert decisions.record_batches(store, again, now=later(3), config=cfg) == []
    back = decisions.record_batches(store, again, now=later(49), config=cfg)
    assert [b.repository for b in back] == ["payments/b"]
    with store.connect() as conn:
        labels = read_feedback(conn, until=later(49))
    # Cancelled and snoozed items are no label; denied ones say "still needed".
    assert sorted({(f.repository, f.verdict) for f in labels}) == [("payments/a", "denied")]
    assert AuditLog(store).verify().ok


@pytest.mark.parametrize("min_approvals", [1, 2])
def test_concurrent_clicks_make_one_transition(store, tmp_path, min_approvals):  # type: ignore[no-untyped-def]
    cfg = make_config(tmp_path, min_approvals=min_approvals)
    (batch,) = _record(store, cfg)
    users = ["U0ALICE", "U0BOB", "U0ALICE", "U0BOB", "U0ALICE"]
    results: list[decisions.DecisionResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(users))

    def click(user: str) -> None:
        try:
            barrier.wait()
            results.append(decisions.approve(store, batch_id=batch.id, user_id=user,
                                             now=later(1)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=click, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.changed for r in results) == 1
    final = decisions.get_batch(store, batch.id)
    assert final.state == "approved" and final.due_at == later(1) + timedelta(hours=24)
    # Clicks after the transition find the batch approved and record no approval.
    assert len(final.approvals) == min_approvals == len(set(final.approvals))
    audit = AuditLog(store)
    assert audit.verify().ok
    approvals = [e for e in audit.entries(kind="decision.approve") if e.data["changed"]]
    assert len(approvals) == 1


def test_approve_and_deny_at_once_one_wins(store, tmp_path):  # type: ignore[no-untyped-def]
    cfg = make_config(tmp_path)
    (batch,) = _record(store, cfg)
    barrier = threading.Barrier(4)
    results: list[decisions.DecisionResult] = []

    def click(action: str, user: str) -> None:
        barrier.wait()
        if action == "approve":
            results.append(decisions.approve(store, batch_id=batch.id, user_id=user,
                                             now=later(1)))
        else:
            results.append(decisions.deny(store, batch_id=batch.id, user_id=user, now=later(1)))

    threads = [threading.Thread(target=click, args=a) for a in
               [("approve", "U0ALICE"), ("deny", "U0BOB"), ("approve", "U0BOB"),
                ("deny", "U0ALICE")]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    winners = [r for r in results if r.changed]
    assert len(winners) == 1
    final = decisions.get_batch(store, batch.id)
    assert final.state == winners[0].state
    assert {i.state for i in final.items} == {final.state}
    assert all(r.state == final.state for r in results if not r.changed)
