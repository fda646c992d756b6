"""Batch and item states: the enums store the same strings as before (no migration)."""

from __future__ import annotations

from sqlalchemy import select

from recommender import decisions
from recommender.decisions import BatchState, ItemState
from recommender.store.tables import batch_items, batches

from .helpers import T0, Suggestion, digest, later, make_config

# The values databases already hold; changing one would need a data migration.
STORED_BATCH_STATES = {"pending", "approved", "denied", "snoozed", "cancelled", "done"}
STORED_ITEM_STATES = {"suggested", "approved", "executing", "deleted", "skipped", "failed",
                      "dropped", "denied", "snoozed", "cancelled"}


def test_the_enums_are_the_stored_strings() -> None:
    assert {s.value for s in BatchState} == STORED_BATCH_STATES
    assert {s.value for s in ItemState} == STORED_ITEM_STATES
    assert all(isinstance(s, str) and str(s) == s.value for s in (*BatchState, *ItemState))


def _record(store, cfg, repo):  # type: ignore[no-untyped-def]
    sugg = [Suggestion(repo, digest(i), [f"v{i}"]) for i in range(3)]
    return decisions.record_batches(store, sugg, now=T0, config=cfg)


def test_rows_hold_plain_strings_and_read_back_as_members(store, tmp_path):  # type: ignore[no-untyped-def]
    cfg = make_config(tmp_path)
    approved = _record(store, cfg, repo="payments/a")[0]
    denied = _record(store, cfg, repo="payments/b")[0]
    decisions.approve(store, batch_id=approved.id, user_id="U0ALICE", now=later(1),
                      item_ids=[approved.items[0].id])
    decisions.deny(store, batch_id=denied.id, user_id="U0BOB", now=later(1))
    with store.connect() as conn:
        raw_batches = dict(conn.execute(select(batches.c.id, batches.c.state)).all())
        raw_items = sorted(conn.execute(select(batch_items.c.batch_id, batch_items.c.state)
                                        .order_by(batch_items.c.id)).all())
    assert raw_batches == {approved.id: "approved", denied.id: "denied"}
    assert all(type(v) is str for v in raw_batches.values())
    assert raw_items == sorted([(approved.id, "approved"), (approved.id, "dropped"),
                                        (approved.id, "dropped"), (denied.id, "denied"),
                                        (denied.id, "denied"), (denied.id, "denied")])
    again = decisions.get_batch(store, approved.id)
    assert again.state is BatchState.APPROVED
    assert [i.state for i in again.items] == [ItemState.APPROVED, ItemState.DROPPED,
                                              ItemState.DROPPED]
