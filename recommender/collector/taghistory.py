"""The time-versioned tag -> digest map, updated from pushes and deletes in one batch.

``tag_history`` rows say: ``tag`` pointed at ``digest`` during ``[valid_from, valid_to)``.
Events arrive late and out of order, so each change is placed at its own time:

* a push at ``t`` splits the interval holding ``t`` (the new one ends where the old one ended);
  into a gap (after a delete, before everything known) it ends where the next interval starts.
  Every push stays the start of its own interval, even when the digest does not change:
  merging would forget a point that a later-arriving push needs in order to end correctly;
* a tag delete at ``t`` ends the interval holding ``t``;
* a manifest delete at ``t`` ends every interval on that digest holding ``t`` (a registry
  deletes a manifest with all its tags); a repository delete ends every interval of it.

One batch loads the rows that can change (those not ended before the batch's earliest event),
applies its events in time order in memory, and writes the difference with three
``executemany`` calls: a handful of statements per batch instead of a few per push.
The caller serialises writers per repository (PostgreSQL advisory locks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, or_, select, update

from ..store.tables import tag_history
from .events import Event

__all__ = ["apply_changes"]

_IN_CHUNK = 500


@dataclass(slots=True)
class _Row:
    id: int | None
    digest: str
    valid_from: datetime
    valid_to: datetime | None
    changed: bool = False
    deleted: bool = False

    def holds(self, t: datetime) -> bool:
        return self.valid_from <= t and (self.valid_to is None or t < self.valid_to)


def apply_changes(conn: Connection, changes: Sequence[Event]) -> None:
    """Apply pushes (tag + digest) and deletes (manifest, tag, repository), in time order."""
    if not changes:
        return
    since = min(e.time for e in changes)
    timelines = _load(conn, changes, since)
    for e in changes:
        if e.action == "push":
            assert e.tag is not None and e.digest is not None
            _push(timelines.setdefault((e.repository, e.tag), []), e.digest, e.time)
        elif e.digest is not None:
            for (repo, _tag), rows in timelines.items():
                if repo == e.repository:
                    _close(rows, e.time, digest=e.digest)
        elif e.tag is not None:
            _close(timelines.get((e.repository, e.tag), []), e.time, digest=None)
        else:  # the whole repository
            for (repo, _tag), rows in timelines.items():
                if repo == e.repository:
                    _close(rows, e.time, digest=None)
    _save(conn, timelines)


def _load(conn: Connection, changes: Sequence[Event], since: datetime
          ) -> dict[tuple[str, str], list[_Row]]:
    th = tag_history.c
    live = or_(th.valid_to.is_(None), th.valid_to >= since)
    pairs = {(e.repository, e.tag) for e in changes if e.tag is not None and
             (e.action == "push" or e.digest is None)}
    deleted = sorted({(e.repository, e.digest) for e in changes
                      if e.action == "delete" and e.digest is not None})
    whole = sorted({e.repository for e in changes
                    if e.action == "delete" and e.digest is None and e.tag is None})
    # Every tag of a deleted repository can change.
    for start in range(0, len(whole), _IN_CHUNK):
        for repo, tag in conn.execute(
            select(th.repository, th.tag).where(
                th.repository.in_(whole[start:start + _IN_CHUNK]), live).distinct()
        ):
            pairs.add((repo, tag))
    # The tags a deleted manifest carries now: their rows can change too.
    for start in range(0, len(deleted), _IN_CHUNK):
        chunk = deleted[start:start + _IN_CHUNK]
        wanted = set(chunk)
        for repo, tag, digest in conn.execute(
            select(th.repository, th.tag, th.digest).where(
                th.repository.in_({r for r, _ in chunk}), th.digest.in_({d for _, d in chunk}),
                live)
        ):
            if (repo, digest) in wanted:
                pairs.add((repo, tag))
    timelines: dict[tuple[str, str], list[_Row]] = {}
    ordered = sorted(pairs)
    for start in range(0, len(ordered), _IN_CHUNK):
        chunk = ordered[start:start + _IN_CHUNK]
        wanted = set(chunk)
        for row in conn.execute(
            select(th.id, th.repository, th.tag, th.digest, th.valid_from, th.valid_to).where(
                th.repository.in_({r for r, _ in chunk}), th.tag.in_({t for _, t in chunk}),
                live)
        ):
            if (row.repository, row.tag) in wanted:
                timelines.setdefault((row.repository, row.tag), []).append(
                    _Row(row.id, row.digest, row.valid_from, row.valid_to))
    return timelines


def _holding(rows: list[_Row], t: datetime) -> _Row | None:
    best = None
    for row in rows:
        if not row.deleted and row.holds(t) and (best is None or row.valid_from > best.valid_from):
            best = row
    return best


def _push(rows: list[_Row], digest: str, t: datetime) -> None:
    cur = _holding(rows, t)
    if cur is not None:
        if cur.valid_from == t:  # two pushes at the same instant: the later message wins
            if cur.digest != digest:
                cur.digest, cur.changed = digest, True
            return
        end = cur.valid_to
        cur.valid_to, cur.changed = t, True
    else:
        starts = [r.valid_from for r in rows if not r.deleted and r.valid_from >= t]
        nxt = min(starts) if starts else None
        if nxt == t:
            return  # an empty interval [t, t) starts here: a delete at the push's instant
        end = nxt
    rows.append(_Row(None, digest, t, end))


def _close(rows: list[_Row], t: datetime, *, digest: str | None) -> None:
    for row in rows:
        if row.deleted or not row.holds(t) or (digest is not None and row.digest != digest):
            continue
        if row.valid_from == t and digest is None:
            row.deleted = True  # a tag deleted at the instant it was pushed
        else:
            row.valid_to, row.changed = t, True


def _save(conn: Connection, timelines: dict[tuple[str, str], list[_Row]]) -> None:
    inserts, updates, deletes = [], [], []
    for (repo, tag), rows in timelines.items():
        for row in rows:
            if row.id is None:
                if not row.deleted:
                    inserts.append({"repository": repo, "tag": tag, "digest": row.digest,
                                    "valid_from": row.valid_from, "valid_to": row.valid_to,
                                    "source": "push"})
            elif row.deleted:
                deletes.append({"i": row.id})
            elif row.changed:
                updates.append({"i": row.id, "d": row.digest, "f": row.valid_from,
                                "t": row.valid_to})
    th = tag_history.c
    if deletes:
        conn.execute(delete(tag_history).where(th.id == bindparam("i")), deletes)
    if updates:
        conn.execute(update(tag_history).where(th.id == bindparam("i")).values(
            digest=bindparam("d"), valid_from=bindparam("f"), valid_to=bindparam("t")), updates)
    if inserts:
        conn.execute(tag_history.insert(), inserts)
