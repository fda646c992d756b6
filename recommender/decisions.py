"""Decisions on batches of suggestions: record, approve, deny, snooze, cancel.

A batch groups a team's suggestions for one repository and kind. Every decision is one atomic
state change: the batch row is updated ``WHERE state = <expected>``, so of several concurrent
clicks exactly one moves it, and the others see that it already moved. Each decision and its
audit row commit in the same transaction. Authorization (is this Slack user an approver?) is
decided by the caller; refused clicks are recorded with :func:`record_refusal`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Connection, and_, func, or_, select, update

from .audit import AuditLog
from .config import Config
from .errors import DecisionError
from .inventory import current_tags
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


class BatchState(StrEnum):
    """A batch's ``state`` column: pending -> approved | denied | snoozed | cancelled;
    approved -> done (all items finished) or cancelled. Members are ``str``, so the stored
    values are these strings."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    SNOOZED = "snoozed"
    CANCELLED = "cancelled"
    DONE = "done"


class ItemState(StrEnum):
    """A batch item's ``state`` column: suggested -> approved -> executing -> deleted |
    skipped | failed; or dropped (left out of an approval), denied, snoozed, cancelled (with
    its batch)."""

    SUGGESTED = "suggested"
    APPROVED = "approved"
    EXECUTING = "executing"
    DELETED = "deleted"
    SKIPPED = "skipped"
    FAILED = "failed"
    DROPPED = "dropped"
    DENIED = "denied"
    SNOOZED = "snoozed"
    CANCELLED = "cancelled"


# Items in these states are "pending": never proposed a second time.
ACTIVE_ITEM_STATES = (ItemState.SUGGESTED, ItemState.APPROVED, ItemState.EXECUTING)
FINISHED_ITEM_STATES = (ItemState.DELETED, ItemState.SKIPPED, ItemState.FAILED)


class SuggestionLike(Protocol):
    """What :func:`record_batches` reads from the recommender's ``Suggestion`` (and its
    ``members`` when it has them)."""

    repository: str
    digest: str
    tags: Sequence[str]
    score: float
    suggested: bool
    reclaimable_bytes: int
    reasons: Sequence[str]
    blocked_by: Sequence[str]
    batch: str
    kind: str


@dataclass(frozen=True)
class ItemRecord:
    id: int
    batch_id: str
    repository: str
    digest: str
    tags: tuple[str, ...]
    score: float | None
    reclaimable_bytes: int
    reasons: tuple[str, ...]
    suggested_at: datetime
    state: ItemState
    due_at: datetime | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    result: str | None = None
    skipped_reason: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class BatchRecord:
    id: str
    batch_key: str
    team: str
    channel: str | None
    repository: str
    kind: str
    state: BatchState
    created_at: datetime
    min_approvals: int
    cool_off: timedelta
    due_at: datetime | None = None
    posted_channel: str | None = None
    posted_ts: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    snoozed_until: datetime | None = None
    approvals: tuple[str, ...] = ()
    items: tuple[ItemRecord, ...] = field(default=())

    @property
    def reclaimable_bytes(self) -> int:
        """Sum of the items' own estimates (not layer-deduplicated across items)."""
        return sum(i.reclaimable_bytes for i in self.items if i.state != ItemState.DROPPED)

    def count(self, *states: str) -> int:
        return sum(1 for i in self.items if i.state in states)


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


# --- reading --------------------------------------------------------------------------------


def _item(row: Any) -> ItemRecord:
    return ItemRecord(
        id=int(row.id), batch_id=row.batch_id, repository=row.repository, digest=row.digest,
        tags=tuple(row.tags or ()), score=row.score, reclaimable_bytes=int(row.reclaimable_bytes
                                                                            or 0),
        reasons=tuple(row.reasons or ()), suggested_at=row.suggested_at, state=ItemState(row.state),
        due_at=row.due_at, attempts=int(row.attempts or 0), next_attempt_at=row.next_attempt_at,
        result=row.result, skipped_reason=row.skipped_reason, finished_at=row.finished_at,
    )


def _batches(conn: Connection, where: Any) -> list[BatchRecord]:
    rows = conn.execute(select(batches).where(where).order_by(batches.c.created_at,
                                                              batches.c.id)).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    items: dict[str, list[ItemRecord]] = {i: [] for i in ids}
    for row in conn.execute(select(batch_items).where(batch_items.c.batch_id.in_(ids))
                            .order_by(batch_items.c.id)):
        items[row.batch_id].append(_item(row))
    users: dict[str, list[str]] = {i: [] for i in ids}
    for row in conn.execute(select(approvals).where(approvals.c.batch_id.in_(ids))
                            .order_by(approvals.c.at, approvals.c.user_id)):
        users[row.batch_id].append(row.user_id)
    return [
        BatchRecord(
            id=r.id, batch_key=r.batch_key, team=r.team, channel=r.channel,
            repository=r.repository, kind=r.kind, state=BatchState(r.state),
            created_at=r.created_at,
            min_approvals=int(r.min_approvals), cool_off=timedelta(seconds=r.cool_off_seconds),
            due_at=r.due_at, posted_channel=r.posted_channel, posted_ts=r.posted_ts,
            decided_by=r.decided_by, decided_at=r.decided_at, reason=r.reason,
            snoozed_until=r.snoozed_until, approvals=tuple(users[r.id]),
            items=tuple(items[r.id]),
        )
        for r in rows
    ]


def get_batch(store: Store, batch_id: str, *, conn: Connection | None = None) -> BatchRecord:
    """The batch with its items and approvers; :class:`DecisionError` when unknown."""
    if conn is None:
        with store.connect() as own:
            return get_batch(store, batch_id, conn=own)
    found = _batches(conn, batches.c.id == batch_id)
    if not found:
        raise DecisionError(f"no batch {batch_id!r}", batch_id=batch_id)
    return found[0]


def list_batches(store: Store, *, states: Iterable[str] | None = None, team: str | None = None,
                 unposted: bool = False) -> list[BatchRecord]:
    """Batches, oldest first, optionally filtered by state, team, or not yet posted."""
    where: list[Any] = []
    if states is not None:
        where.append(batches.c.state.in_(list(states)))
    if team is not None:
        where.append(batches.c.team == team)
    if unposted:
        where.append(batches.c.posted_ts.is_(None))
    with store.connect() as conn:
        return _batches(conn, and_(True, *where))


# --- recording suggestions --------------------------------------------------------------------


def _blocked_keys(conn: Connection, *, now: datetime, deny_quiet: timedelta) -> set[tuple[str,
                                                                                        str]]:
    """(repository, digest) that must not be proposed again right now."""
    query = (
        select(batch_items.c.repository, batch_items.c.digest)
        .join(batches, batches.c.id == batch_items.c.batch_id)
        .where(or_(
            batch_items.c.state.in_(ACTIVE_ITEM_STATES),
            batch_items.c.state == ItemState.DELETED,
            and_(batch_items.c.state == ItemState.SNOOZED, batches.c.snoozed_until > now),
            and_(batch_items.c.state == ItemState.DENIED,
                 batches.c.decided_at > now - deny_quiet),
        ))
    )
    return {(r.repository, r.digest) for r in conn.execute(query)}


def record_batches(store: Store, suggestions: Iterable[SuggestionLike], *, now: datetime,
                   config: Config) -> list[BatchRecord]:
    """Record new batches from suggestions; returns only the batches created by this call.

    Only suggestions marked ``suggested`` with no guardrail are recorded, grouped per team,
    repository and kind (the recommender's ``batch`` key). A digest already pending in an
    open batch, recently denied, snoozed, or deleted is skipped, so calling this twice with
    the same suggestions records nothing the second time. Repositories no team owns are
    skipped: nobody could approve them. A suggestion's ``members`` (an index's platform
    manifests, a subject's signatures and attestations) become items of the same batch, so a
    unit is decided and deleted together; the executor deletes them only after the manifest
    they belong to is gone.
    """
    deny_quiet: timedelta = config["executor.deny_quiet"]
    audit = AuditLog(store)
    created: list[str] = []
    with store.begin() as conn:
        # Taking the audit lock first serializes concurrent callers, so two processes cannot
        # both see a digest as new and propose it twice.
        audit.lock(conn)
        blocked = _blocked_keys(conn, now=now, deny_quiet=deny_quiet)
        tags_now = current_tags(conn, at=now)
        groups: dict[tuple[str, str], list[SuggestionLike]] = {}
        for s in suggestions:
            key = (s.repository, s.digest)
            if not s.suggested or s.blocked_by or key in blocked:
                continue
            team = config.team_for(s.repository)
            if team is None:
                continue
            blocked.add(key)
            groups.setdefault((team.name, s.batch), []).append(s)
        teams = {t.name: t for t in config.teams}
        log: list[tuple[str, str, dict[str, Any]]] = []
        for (team_name, batch_key), members in groups.items():
            team = teams[team_name]
            batch_id = secrets.token_urlsafe(12)
            first = members[0]
            conn.execute(batches.insert().values(
                id=batch_id, batch_key=batch_key, team=team.name, channel=team.channel,
                repository=first.repository, kind=first.kind, state=BatchState.PENDING,
                created_at=now, updated_at=now, min_approvals=team.min_approvals,
                cool_off_seconds=int(team.cool_off.total_seconds()),
            ))
            rows = []
            for s in members:
                rows.append(
                    {"batch_id": batch_id, "repository": s.repository, "digest": s.digest,
                     "tags": list(s.tags), "score": float(s.score),
                     "reclaimable_bytes": (None if s.reclaimable_bytes is None
                                           else int(s.reclaimable_bytes)),
                     "reasons": list(s.reasons), "suggested_at": now,
                     "state": ItemState.SUGGESTED,
                     "attempts": 0})
                for member in getattr(s, "members", None) or ():
                    if (s.repository, member) in blocked:
                        continue
                    blocked.add((s.repository, member))
                    rows.append(
                        {"batch_id": batch_id, "repository": s.repository, "digest": member,
                         "tags": tags_now.get((s.repository, member), []),
                         "score": float(s.score), "reclaimable_bytes": 0,
                         "reasons": [f"goes with {s.digest} (a platform manifest or referrer)"],
                         "suggested_at": now, "state": ItemState.SUGGESTED, "attempts": 0})
            conn.execute(batch_items.insert(), rows)
            created.append(batch_id)
            log.append(("batch.recorded", "tagwarden", {
                "batch_id": batch_id, "team": team.name, "repository": first.repository,
                "kind": first.kind, "items": [[r["digest"], r["tags"]] for r in rows],
                "reclaimable_bytes": sum(int(s.reclaimable_bytes or 0) for s in members),
            }))
        audit.append_many(conn, log, now=now)
        return _batches(conn, batches.c.id.in_(created)) if created else []


def set_posted(store: Store, *, batch_id: str, channel: str, ts: str, now: datetime) -> None:
    """Remember where the batch's Slack message is, to update it in place later."""
    with store.begin() as conn:
        done = conn.execute(update(batches).where(batches.c.id == batch_id)
                            .values(posted_channel=channel, posted_ts=ts, updated_at=now))
        if done.rowcount == 0:
            raise DecisionError(f"no batch {batch_id!r}", batch_id=batch_id)
        AuditLog(store).append("batch.posted", "tagwarden",
                               {"batch_id": batch_id, "channel": channel, "ts": ts},
                               now=now, conn=conn)


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
