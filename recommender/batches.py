"""Batches in the store: reading them back, recording new ones from suggestions, and
remembering where their Slack message is.

A batch groups a team's suggestions for one repository and kind; its states and records are
in :mod:`.batchstate`, the decisions on it in :mod:`.decisions`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from .audit import AuditLog
from .batchstate import (
    ACTIVE_ITEM_STATES,
    BatchRecord,
    BatchState,
    ItemRecord,
    ItemState,
    SuggestionLike,
)
from .config import Config
from .errors import DecisionError
from .inventory import current_tags
from .store import Store
from .store.tables import approvals, batch_items, batches

__all__ = ["claim_posting", "get_batch", "list_batches", "record_batches", "release_posting",
           "set_posted"]

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


def claim_posting(store: Store, batch_id: str, *, owner: str, now: datetime,
                  timeout: timedelta) -> bool:
    """Take the right to post the batch's message: True for one poster only, while the batch
    has no message and no other poster claimed it less than ``timeout`` ago."""
    with store.begin() as conn:
        done = conn.execute(update(batches)
                            .where(batches.c.id == batch_id, batches.c.posted_ts.is_(None),
                                   or_(batches.c.posting_by.is_(None),
                                       batches.c.posting_at < now - timeout))
                            .values(posting_by=owner, posting_at=now))
        return done.rowcount == 1


def release_posting(store: Store, batch_id: str, *, owner: str) -> None:
    """Give the claim back (the post failed): the next run may post the batch."""
    with store.begin() as conn:
        conn.execute(update(batches)
                     .where(batches.c.id == batch_id, batches.c.posting_by == owner)
                     .values(posting_by=None, posting_at=None))


def set_posted(store: Store, *, batch_id: str, channel: str, ts: str, now: datetime) -> None:
    """Remember where the batch's Slack message is, to update it in place later."""
    with store.begin() as conn:
        done = conn.execute(update(batches).where(batches.c.id == batch_id)
                            .values(posted_channel=channel, posted_ts=ts, updated_at=now,
                                    posting_by=None, posting_at=None))
        if done.rowcount == 0:
            raise DecisionError(f"no batch {batch_id!r}", batch_id=batch_id)
        AuditLog(store).append("batch.posted", "tagwarden",
                               {"batch_id": batch_id, "channel": channel, "ts": ts},
                               now=now, conn=conn)
