"""The weekly digest of one team: built from the store as of ``now``, posted as a summary
message and threaded pages (about 15 batches a page, about one second apart).

What it says: space reclaimable in batches waiting for approval, space reclaimed last week,
pending approvals, how last week's suggestions fared (approved = the model was right, denied
and skipped-at-the-last-check = it was wrong or surprised), and the current model's version and
its precision on validation data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import Connection, and_, func, select

from recommender.config import Config
from recommender.decisions import FINISHED_ITEM_STATES, BatchState, ItemState
from recommender.errors import ConfigError
from recommender.sizes import human_bytes
from recommender.store import Store
from recommender.store import tables as t

from . import blocks
from .digestblocks import DigestView
from .posting import Poster, send

__all__ = ["DigestReport", "build_digest", "post_digest"]

WEEK = timedelta(days=7)


def _model(conn: Connection) -> tuple[str | None, float | None]:
    row = conn.execute(select(t.models.c.id, t.models.c.metrics)
                       .where(t.models.c.status == "promoted")
                       .order_by(t.models.c.promoted_at.desc()).limit(1)).first()
    if row is None:
        return None, None
    precision = ((row.metrics or {}).get("validation") or {}).get("precision")
    return row.id, float(precision) if precision is not None else None


def _surprises(conn: Connection, team: str, *, since: datetime,
               now: datetime) -> tuple[str, ...]:
    """Deleted manifests somebody still asked for last week: the worst kind of wrong."""
    query = (select(t.batch_items.c.repository, t.batch_items.c.tags, t.batch_items.c.digest,
                    func.count().label("n"))
             .join(t.batches, t.batches.c.id == t.batch_items.c.batch_id)
             .join(t.events, and_(t.events.c.repository == t.batch_items.c.repository,
                                  t.events.c.digest == t.batch_items.c.digest,
                                  t.events.c.time > t.batch_items.c.finished_at))
             .where(t.batches.c.team == team, t.batch_items.c.state == ItemState.DELETED,
                    t.events.c.action.in_(["pull", "deploy"]),
                    t.events.c.time >= since, t.events.c.time < now)
             # The primary key alone: the other columns depend on it (tags is JSON, which
             # PostgreSQL cannot group by).
             .group_by(t.batch_items.c.id)
             .order_by(func.count().desc(), t.batch_items.c.id))
    return tuple(
        f"{r.repository}:{','.join(r.tags or []) or r.digest[:19]} asked for {r.n} time"
        f"{'s' if r.n != 1 else ''} after its deletion" for r in conn.execute(query))


def build_digest(conn: Connection, config: Config, team: str, *, now: datetime) -> DigestView:
    since = now - WEEK
    items = (select(t.batch_items, t.batches.c.kind, t.batches.c.reason.label("batch_reason"),
                    t.batches.c.decided_at, t.batches.c.state.label("batch_state"))
             .join(t.batches, t.batches.c.id == t.batch_items.c.batch_id)
             .where(t.batches.c.team == team))
    pending: dict[str, dict[str, Any]] = {}
    reclaimable = pending_items = reclaimed = deleted = approved = denied = 0
    skipped: Counter[str] = Counter()
    denials: list[str] = []
    denied_batches: set[str] = set()
    for row in conn.execute(items.where(
            t.batches.c.state.in_([BatchState.PENDING])
            | and_(t.batches.c.decided_at >= since, t.batches.c.decided_at < now)
            | and_(t.batch_items.c.finished_at >= since, t.batch_items.c.finished_at < now))):
        if row.batch_state == BatchState.PENDING and row.state == ItemState.SUGGESTED:
            size = int(row.reclaimable_bytes or 0)
            reclaimable += size
            pending_items += 1
            entry = pending.setdefault(row.batch_id, {"repo": row.repository, "kind": row.kind,
                                                      "n": 0, "bytes": 0, "sized": 0})
            entry["n"] += 1
            entry["bytes"] += size
            entry["sized"] += row.reclaimable_bytes is not None
        if row.finished_at is not None and since <= row.finished_at < now:
            if row.state == ItemState.DELETED:
                deleted += 1
                reclaimed += int(row.deleted_bytes or row.reclaimable_bytes or 0)
            elif row.state == ItemState.SKIPPED:
                skipped[row.skipped_reason or "no reason recorded"] += 1
        if row.decided_at is not None and since <= row.decided_at < now:
            if row.state == ItemState.DENIED:
                denied += 1
                if row.batch_id not in denied_batches:
                    denied_batches.add(row.batch_id)
                    why = row.batch_reason or "no reason given"
                    denials.append(f"{row.repository} ({row.kind}): {why}")
            elif row.state in {ItemState.APPROVED, ItemState.EXECUTING,
                               *FINISHED_ITEM_STATES}:
                approved += 1
    surprises = _surprises(conn, team, since=since, now=now)
    version, precision = _model(conn)
    ranked = sorted(pending.values(), key=lambda e: (-e["bytes"], e["repo"], e["kind"]))
    lines = tuple(f"• *{e['repo']}* — {e['n']} {e['kind']} manifest"
                  f"{'s' if e['n'] != 1 else ''}, {human_bytes(e['bytes'] if e['sized'] else None)}"
                  for e in ranked)
    return DigestView(
        team=team, week_start=since, now=now, reclaimable_bytes=reclaimable,
        pending_batches=len(pending), pending_items=pending_items, reclaimed_bytes=reclaimed,
        deleted_items=deleted, approved_items=approved, denied_items=denied,
        skipped=tuple(skipped.most_common()), denials=tuple(denials),
        surprises=surprises, model_version=version,
        model_precision=precision, lines=lines,
    )


@dataclass
class DigestReport:
    channel: str
    ts: str | None = None
    pages_posted: int = 0
    pages_failed: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)


def post_digest(store: Store, config: Config, *, team: str, client: WebClient | None,
                now: datetime, poster: Poster | None = None,
                dry_run: bool = False) -> DigestReport:
    """Post the summary, then its pages in the summary's thread (paced per channel).

    ``dry_run`` builds the messages without sending them (``client`` may then be None)."""
    found = next((x for x in config.teams if x.name == team), None)
    if found is None or not found.channel:
        raise ConfigError(f"team {team!r} is unknown or has no channel", setting="team.channel")
    with store.connect() as conn:
        view = build_digest(conn, config, team, now=now)
    summary = blocks.digest_summary(view)
    pages = blocks.digest_pages(view, config["slack.digest_page_size"])
    report = DigestReport(found.channel, messages=[summary, *pages])
    if dry_run:
        return report
    if poster is None:
        if client is None:
            raise ConfigError("posting the digest needs a Slack client",
                              setting="slack.bot_token")
        poster = Poster(client, interval=config["slack.post_interval"].total_seconds())
    report.ts = send(poster, found.channel, summary)
    if report.ts is None:
        return report
    for page in pages:
        if send(poster, found.channel, {**page, "thread_ts": report.ts}):
            report.pages_posted += 1
        else:
            report.pages_failed += 1
    return report
