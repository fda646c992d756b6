"""Decisions on batches of suggestions: approve, deny, snooze, cancel.

A batch groups a team's suggestions for one repository and kind; its states and records live
in :mod:`.batchstate`, recording and reading batches in :mod:`.batches`. Every decision is one
atomic state change: the batch row is updated ``WHERE state = <expected>``, so of several
concurrent clicks exactly one moves it, and the others see that it already moved. Each
decision and its audit row commit in the same transaction. Authorization (is this Slack user
an approver?) is decided by the caller; refused clicks are recorded with :func:`record_refusal`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, update

from .audit import AuditLog
from .batches import get_batch, list_batches, record_batches, set_posted
from .batchstate import (
    ACTIVE_ITEM_STATES,
    FINISHED_ITEM_STATES,
    BatchRecord,
    BatchState,
    ItemRecord,
    ItemState,
    SuggestionLike,
)
from .errors import DecisionError
from .store import Store, dialect_insert
from .store.tables import approvals, batch_items, batches

__all__ = [
    "ACTIVE_ITEM_STATES",
    "FINISHED_ITEM_STATES",
    "BatchRecord",
    "BatchState",
    "DecisionResult",
    "ItemRecord",
    "ItemState",
    "SuggestionLike",
    "approve",
    "cancel",
    "deny",
    "get_batch",
    "list_batches",
    "record_batches",
    "record_refusal",
    "set_posted",
    "snooze",
]


@dataclass(frozen=True)
class DecisionResult:
    """The outcome of one click. ``changed``: this call moved the batch to ``state``."""

    batch_id: str
    state: BatchState
    changed: bool
    approvals: tuple[str, ...]
    due_at: datetime | None
    message: str
    needed: int = 1


def record_refusal(store: Store, *, batch_id: str, user_id: str, action: str, now: datetime,
                   reason: str) -> None:
    """Audit a click the caller refused (not an approver, wrong workspace...)."""
    AuditLog(store).append("click.refused", user_id, {"batch_id": batch_id, "action": action,
                                                      "reason": reason, "allowed": False},
                           now=now)


# --- decisions ------------------------------------------------------------------------------


def _claim(conn: Connection, batch_id: str, states: Sequence[str], now: datetime) -> bool:
    """Lock the batch row if it is in one of ``states`` (a row lock / SQLite's write lock)."""
    done = conn.execute(update(batches).where(batches.c.id == batch_id)
                        .where(batches.c.state.in_(list(states))).values(updated_at=now))
    return done.rowcount == 1


def _unchanged(conn: Connection, store: Store, batch_id: str, user_id: str, action: str,
               now: datetime) -> DecisionResult:
    batch = get_batch(store, batch_id, conn=conn)
    message = f"batch is already {batch.state}"
    AuditLog(store).append(f"decision.{action}", user_id, {
        "batch_id": batch_id, "allowed": True, "changed": False, "state": batch.state,
    }, now=now, conn=conn)
    return DecisionResult(batch_id, batch.state, False, batch.approvals, batch.due_at, message,
                          batch.min_approvals)


def approve(store: Store, *, batch_id: str, user_id: str, now: datetime,
            item_ids: Iterable[int] | None = None) -> DecisionResult:
    """Record ``user_id``'s approval; the batch moves to approved once enough distinct users
    approved (``min_approvals``). ``item_ids`` keeps only those items (the rest are dropped).
    The deletion is due after the team's cooling-off period."""
    keep = None if item_ids is None else {int(i) for i in item_ids}
    audit = AuditLog(store)
    with store.begin() as conn:
        if not _claim(conn, batch_id, [BatchState.PENDING], now):
            return _unchanged(conn, store, batch_id, user_id, "approve", now)
        row = conn.execute(select(batches).where(batches.c.id == batch_id)).one()
        dropped: list[int] = []
        if keep is not None:
            open_ids = {int(i) for i in conn.execute(
                select(batch_items.c.id).where(batch_items.c.batch_id == batch_id)
                .where(batch_items.c.state == ItemState.SUGGESTED)).scalars()}
            unknown = sorted(keep - open_ids)
            if unknown:
                raise DecisionError(f"item {unknown[0]} is not an open item of batch {batch_id}",
                                    batch_id=batch_id, item_id=unknown[0])
            if not keep:
                raise DecisionError("no items left to approve (deny the batch instead)",
                                    batch_id=batch_id)
            dropped = sorted(open_ids - keep)
            if dropped:
                conn.execute(update(batch_items).where(batch_items.c.id.in_(dropped))
                             .values(state=ItemState.DROPPED, finished_at=now))
        conn.execute(dialect_insert(conn, approvals)
                     .values(batch_id=batch_id, user_id=user_id, at=now)
                     .on_conflict_do_nothing())  # type: ignore[attr-defined]
        users = tuple(conn.execute(select(approvals.c.user_id)
                                   .where(approvals.c.batch_id == batch_id)
                                   .order_by(approvals.c.at, approvals.c.user_id)).scalars())
        needed = int(row.min_approvals)
        state, due_at, changed = BatchState.PENDING, None, False
        if len(users) >= needed:
            due_at = now + timedelta(seconds=int(row.cool_off_seconds))
            moved = conn.execute(update(batches).where(batches.c.id == batch_id)
                                 .where(batches.c.state == BatchState.PENDING)
                                 .values(state=BatchState.APPROVED, due_at=due_at,
                                         decided_by=",".join(users), decided_at=now))
            changed = moved.rowcount == 1
            state = BatchState.APPROVED
            conn.execute(update(batch_items).where(batch_items.c.batch_id == batch_id)
                         .where(batch_items.c.state == ItemState.SUGGESTED)
                         .values(state=ItemState.APPROVED, due_at=due_at))
            message = f"approved by {', '.join(users)}; deletion due at {due_at.isoformat()}"
        else:
            message = f"approval recorded ({len(users)} of {needed})"
        audit.append("decision.approve", user_id, {
            "batch_id": batch_id, "allowed": True, "changed": changed, "state": state,
            "approvals": list(users), "needed": needed, "due_at": due_at, "dropped": dropped,
        }, now=now, conn=conn)
        return DecisionResult(batch_id, state, changed, users, due_at, message, needed)


def _close(store: Store, *, batch_id: str, user_id: str, now: datetime, action: str,
           from_states: Sequence[BatchState], to_state: BatchState,
           item_states: Sequence[ItemState],
           extra: dict[str, Any]) -> DecisionResult:
    audit = AuditLog(store)
    with store.begin() as conn:
        if not _claim(conn, batch_id, from_states, now):
            return _unchanged(conn, store, batch_id, user_id, action, now)
        conn.execute(update(batches).where(batches.c.id == batch_id)
                     .values(state=to_state, decided_by=user_id, decided_at=now, due_at=None,
                             **extra))
        items = conn.execute(update(batch_items).where(batch_items.c.batch_id == batch_id)
                             .where(batch_items.c.state.in_(list(item_states)))
                             .values(state=ItemState(to_state), finished_at=now, due_at=None))
        started = conn.execute(select(func.count()).select_from(batch_items)
                               .where(batch_items.c.batch_id == batch_id)
                               .where(batch_items.c.state.in_([ItemState.EXECUTING,
                                                               *FINISHED_ITEM_STATES]))
                               ).scalar_one()
        users = tuple(conn.execute(select(approvals.c.user_id)
                                   .where(approvals.c.batch_id == batch_id)).scalars())
        message = f"{to_state} by {user_id}: {items.rowcount} item(s)"
        if started:
            message += (f"; {started} item(s) had already started (one not yet deleted is "
                        "still stopped before its delete)")
        audit.append(f"decision.{action}", user_id, {
            "batch_id": batch_id, "allowed": True, "changed": True, "state": to_state,
            "items": items.rowcount, "already_started": started, **extra,
        }, now=now, conn=conn)
        return DecisionResult(batch_id, to_state, True, users, None, message)


def deny(store: Store, *, batch_id: str, user_id: str, now: datetime,
         reason: str | None = None) -> DecisionResult:
    """Deny a pending batch: its items become "still needed" feedback for the model."""
    return _close(store, batch_id=batch_id, user_id=user_id, now=now, action="deny",
                  from_states=[BatchState.PENDING], to_state=BatchState.DENIED,
                  item_states=[ItemState.SUGGESTED],
                  extra={"reason": reason})


def snooze(store: Store, *, batch_id: str, user_id: str, now: datetime,
           until: datetime) -> DecisionResult:
    """Put a pending batch aside; its digests may be proposed again after ``until``."""
    if until <= now:
        raise DecisionError("snooze needs a time in the future", batch_id=batch_id,
                            until=until.isoformat())
    return _close(store, batch_id=batch_id, user_id=user_id, now=now, action="snooze",
                  from_states=[BatchState.PENDING], to_state=BatchState.SNOOZED,
                  item_states=[ItemState.SUGGESTED],
                  extra={"snoozed_until": until})


def cancel(store: Store, *, batch_id: str, user_id: str, now: datetime) -> DecisionResult:
    """Cancel a pending or approved batch. Items already leased by the executor are left to
    it (one may be mid-DELETE); it skips any whose DELETE has not been sent yet."""
    return _close(store, batch_id=batch_id, user_id=user_id, now=now, action="cancel",
                  from_states=[BatchState.PENDING, BatchState.APPROVED],
                  to_state=BatchState.CANCELLED,
                  item_states=[ItemState.SUGGESTED, ItemState.APPROVED], extra={})
