"""Reading batches from the store into the records :mod:`bot.blocks` renders.

Read-only: every state change goes through :mod:`recommender.decisions` (atomic, audited).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from recommender.decisions import FINISHED_ITEM_STATES, ItemState
from recommender.store import tables as t

from .blocks import BatchView, DecisionView, ItemView

__all__ = ["LoadedBatch", "load_batch", "to_views"]

_IDLE = re.compile(r"^(?:no use for|never used since pushed) (\d+) days?")

# Item states that mean "the executor is finished with it".
FINISHED = frozenset(FINISHED_ITEM_STATES)


@dataclass(frozen=True)
class LoadedBatch:
    view: BatchView
    decision: DecisionView
    channel: str | None
    ts: str | None
    row: dict[str, Any]

    @property
    def finished(self) -> bool:
        """Approved and every remaining item done (the result message is due)."""
        live = [i for i in self.view.items if i.state != ItemState.DROPPED]
        return bool(live) and all(i.state in FINISHED for i in live)


def to_views(row: dict[str, Any], items: list[dict[str, Any]],
             approvers: list[str]) -> tuple[BatchView, DecisionView]:
    shown = [i for i in items if i["state"] != ItemState.DROPPED]
    known = [int(i["reclaimable_bytes"]) for i in shown if i["reclaimable_bytes"] is not None]
    total = sum(known) if known or not shown else None  # None: no size known (no scan yet)
    idle = _idle_days(shown)
    view = BatchView(
        batch_id=row["id"],
        repository=row["repository"],
        kind=row["kind"],
        team=row["team"],
        total_bytes=total,
        idle_days=idle,
        items=tuple(
            ItemView(
                item_id=str(i["id"]),
                repository=i["repository"],
                digest=i["digest"],
                tags=tuple(i["tags"] or ()),
                bytes=(None if i["reclaimable_bytes"] is None
                       else int(i["reclaimable_bytes"])),
                reasons=tuple(i["reasons"] or ()),
                state=i["state"],
                detail=i["skipped_reason"] or (i["result"] if i["state"] == ItemState.FAILED
                                                  else None),
            )
            for i in shown
        ),
    )
    decision = DecisionView(
        state=row["state"],
        approvals=tuple(approvers),
        needed=int(row["min_approvals"]),
        due_at=row["due_at"],
        by=row["decided_by"],
        reason=row["reason"],
        until=row["snoozed_until"],
    )
    return view, decision


def _idle_days(items: list[dict[str, Any]]) -> int | None:
    # "idle 30+ days": the smallest idle time among the items, rounded down to a friendly
    # step, read from the recommender's reasons ("no use for 143 days", "never used since
    # pushed 90 days ago"). Reasons are words, so the title only claims it when all say so.
    days: list[int] = []
    for item in items:
        for reason in item["reasons"] or ():
            match = _IDLE.match(str(reason))
            if match:
                days.append(int(match.group(1)))
                break
    if not days or len(days) < len(items):
        return None
    low = min(days)
    for step in (365, 180, 90, 60, 30, 14, 7):
        if low >= step:
            return step
    return None


def load_batch(conn: Connection, batch_id: str) -> LoadedBatch | None:
    row = conn.execute(select(t.batches).where(t.batches.c.id == batch_id)).mappings().first()
    if row is None:
        return None
    items = [dict(r) for r in conn.execute(
        select(t.batch_items).where(t.batch_items.c.batch_id == batch_id)
        .order_by(t.batch_items.c.id)).mappings()]
    approvers = [r.user_id for r in conn.execute(
        select(t.approvals.c.user_id).where(t.approvals.c.batch_id == batch_id)
        .order_by(t.approvals.c.at, t.approvals.c.user_id))]
    view, decision = to_views(dict(row), items, approvers)
    return LoadedBatch(view, decision, row["posted_channel"], row["posted_ts"], dict(row))
