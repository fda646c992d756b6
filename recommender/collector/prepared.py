"""Prepared batches: a batch of events turned into the rows the writer stores (events,
manifests, rollups, distinct clients) without touching the store, so a forked parser can do it
beside the writer; and the writes of the planned manifest and rollup rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, or_, update

from ..store.tables import manifests, rollups
from ..usage import BLOB, is_manifest_media_type
from .bulk import flat_rows, insert_rows, sqlite_time
from .clients import ClientItem, ClientPlan, plan_clients, write_clients
from .events import Event

__all__ = ["Deferred", "PreparedBatch", "prepare"]

_INDEX_TYPES = frozenset({
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})
_EVENT_COLUMNS = ("time", "received_at", "source", "source_event_id", "action", "usage",
                  "registry", "repository", "digest", "tag", "media_type", "size", "method",
                  "user_agent", "actor", "client_addr", "environment", "cluster", "namespace")
# What an event says, as stored: two events with one id and these equal are one delivery.
_CONTENT_COLUMNS = ("time", "action", "registry", "repository", "digest", "tag", "media_type",
                    "size", "method", "user_agent", "actor", "client_addr", "environment",
                    "cluster", "namespace")
_MANIFEST_COLUMNS = ("repository", "digest", "media_type", "size", "first_seen", "is_index")
_ROLLUP_COLUMNS = ("day", "repository", "digest", "tag", "action", "usage", "count",
                   "first_at", "last_at")


# --- planning without the store -----------------------------------------------------------------

_Rollups = dict[tuple[Any, str, str, str, str, str], list[Any]]


@dataclass(slots=True)
class _ManifestPlan:
    rows: list[tuple[Any, ...]]  # the manifests upsert, in key order
    deletes: list[dict[str, Any]]
    repo_deletes: list[dict[str, Any]]
    pushed: list[dict[str, Any]]


@dataclass(slots=True)
class Deferred:
    """The rollups and distinct clients of several writes in one transaction, written once by
    :meth:`EventWriter.write_deferred` before it commits. The file ingest groups batches so
    (groupcommit.py): a popular manifest's counters are then upserted once per transaction,
    not once per batch (far fewer upserts on a large file; bench/log.md)."""

    rollups: _Rollups = field(default_factory=dict)
    clients: ClientPlan = field(default_factory=dict)

    def add(self, rollup: _Rollups, clients: ClientPlan) -> None:
        """Merge a write's plans (they are adopted, not copied: the caller drops them)."""
        mine = self.rollups
        if not mine:
            self.rollups = rollup
        else:
            for key, value in rollup.items():
                cur = mine.get(key)
                if cur is None:
                    mine[key] = value
                else:
                    cur[0] += value[0]
                    if value[1] < cur[1]:
                        cur[1] = value[1]
                    if value[2] > cur[2]:
                        cur[2] = value[2]
        first = self.clients
        if not first:
            self.clients = clients
        else:
            for client, time in clients.items():
                earliest = first.get(client)
                if earliest is None or time < earliest:
                    first[client] = time


@dataclass(slots=True)
class PreparedBatch:
    """A batch made ready for SQLite away from the store (the ingest's parsing process does
    it, so the writing process only writes): plain data that pickles cheaply, its manifests
    and rollups planned as if every event were new."""

    received: int
    count: int  # events to insert (repeated ids in the batch counted once)
    # The events insert, in key order, times in SQLite's form: one flat tuple of parameters
    # per statement (bulk.flat_rows).
    statements: list[tuple[Any, ...]]
    manifests: _ManifestPlan
    rollups: _Rollups  # without the tag-only pulls and deploys: their digest is not known yet
    clients: ClientPlan  # distinct real clients, likewise without the tag-only pulls
    special: list[tuple[int, Event]]  # (position in rows, event) of tag history changes and
    #                                   tag-only pulls and deploys

    def rows(self) -> list[tuple[Any, ...]]:
        """The events insert's rows (tuples in ``_EVENT_COLUMNS`` order)."""
        width = len(_EVENT_COLUMNS)
        return [flat[i:i + width] for flat in self.statements
                for i in range(0, len(flat), width)]


def prepare(batch: Sequence[Event], *, now: datetime) -> PreparedBatch:
    """Plan ``batch`` (received at ``now``) for :meth:`EventWriter.write_prepared`."""
    # The first of repeated keys wins (reversed: a later assignment overwrites).
    unique = {(ev.source, ev.source_event_id): ev for ev in reversed(batch)}
    ordered = [unique[k] for k in sorted(unique, key="\0".join)]  # key order (as rollups)
    stamp = sqlite_time(now)
    # The parser's stamp, else sqlite_time inlined for a UTC time (a call per event costs as
    # much as the formatting).
    rows: list[tuple[Any, ...]] = [
        (e.stamp or (t.isoformat(" ", "microseconds")[:26] if t.tzinfo is UTC
                     else sqlite_time(t)),
         stamp, e.source, e.source_event_id, e.action, e.usage, e.registry, e.repository,
         e.digest, e.tag, e.media_type, e.size, e.method, e.user_agent, e.actor,
         e.client_addr, e.environment, e.cluster, e.namespace)
        for e in ordered for t in (e.time,)]
    items = [(e, row[0]) for e, row in zip(ordered, rows, strict=True)]
    rollup: _Rollups = {}
    _add_rollups(rollup, items, sqlite=True, skip_pending=True)
    special = [(pos, e) for pos, e in enumerate(ordered) if _is_change(e) or _is_pending(e)]
    return PreparedBatch(received=len(batch), count=len(rows),
                         statements=flat_rows(rows, len(_EVENT_COLUMNS)),
                         manifests=_plan_manifests(items),
                         rollups=rollup, clients=plan_clients(_client_items(items)),
                         special=special)


def _client_items(items: Iterable[tuple[Event, Any]]) -> Iterator[ClientItem]:
    """What :func:`.clients.plan_clients` reads of each (event, its time as stored)."""
    return ((e.repository, e.digest, e.action, e.usage, e.client_addr, t) for e, t in items)


def _differs(e: Event, row: tuple[Any, ...] | None) -> bool:
    """Whether stored ``row`` (``_CONTENT_COLUMNS``) is another event than ``e``."""
    if row is None:
        return False
    for name, value in zip(_CONTENT_COLUMNS, row, strict=True):
        mine = getattr(e, name)
        if mine != value and not (name == "digest" and mine is None):
            return True
    return False


def _is_change(e: Event) -> bool:
    """A change of the tag history: a push of a tag, a delete (manifest, tag, repository)."""
    # The action first: it rules out nearly every event at once.
    return bool((e.action == "push" and e.tag and e.digest) or e.action == "delete") \
        and e.usage != BLOB


def _is_pending(e: Event) -> bool:
    """A pull or deploy that names only a tag: its digest comes from the tag history."""
    return e.digest is None and bool(e.tag) and e.action in ("pull", "deploy")


def _event_of(row: tuple[Any, ...]) -> Event:
    """The event of an events insert row (SQLite form)."""
    return Event(time=datetime.fromisoformat(row[0]).replace(tzinfo=UTC), source=row[2],
                 source_event_id=row[3], action=row[4], usage=row[5], registry=row[6],
                 repository=row[7], digest=row[8], tag=row[9], media_type=row[10],
                 size=row[11], method=row[12], user_agent=row[13], actor=row[14],
                 client_addr=row[15], environment=row[16], cluster=row[17],
                 namespace=row[18])


def _plan_manifests(items: Iterable[tuple[Event, Any]]) -> _ManifestPlan:
    """``first_seen`` from every sighting (push, pull, mount), ``deleted_at`` from deletes.
    ``items``: (event, its time as stored)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    deletes: list[dict[str, Any]] = []
    repo_deletes: list[dict[str, Any]] = []
    # A batch carries a handful of media types: each is looked up once.
    is_manifest: dict[str | None, bool] = {None: True, "": True}
    for e, stamp in items:
        if e.digest is None:
            if e.action == "delete" and e.tag is None:
                repo_deletes.append({"r": e.repository, "t": e.time})  # a whole repository
            continue
        if e.usage == BLOB:
            continue
        if e.action == "delete":
            deletes.append({"r": e.repository, "d": e.digest, "t": e.time})
            continue
        manifest = is_manifest.get(e.media_type)
        if manifest is None:
            manifest = is_manifest[e.media_type] = is_manifest_media_type(e.media_type)
        if not manifest:
            continue
        key = (e.repository, e.digest)
        row = seen.get(key)
        pushed = e.time if e.action == "push" else None
        if row is None:
            seen[key] = {
                "repository": e.repository, "digest": e.digest, "media_type": e.media_type,
                "size": e.size, "first_seen": stamp, "pushed": pushed,
                "is_index": e.media_type in _INDEX_TYPES,
            }
        else:
            if stamp < row["first_seen"]:
                row["first_seen"] = stamp
            row["media_type"] = row["media_type"] or e.media_type
            row["size"] = row["size"] if row["size"] is not None else e.size
            row["is_index"] = row["is_index"] or e.media_type in _INDEX_TYPES
            if pushed is not None:
                row["pushed"] = max(row["pushed"] or pushed, pushed)
    ordered = [seen[k] for k in sorted(seen)]
    return _ManifestPlan(
        rows=[(r["repository"], r["digest"], r["media_type"], r["size"], r["first_seen"],
               r["is_index"]) for r in ordered],
        deletes=deletes, repo_deletes=repo_deletes,
        pushed=[{"r": r["repository"], "d": r["digest"], "t": r["pushed"]}
                for r in ordered if r["pushed"] is not None])


def _write_manifests(conn: Connection, plan: _ManifestPlan, *, converted: bool) -> None:
    if plan.rows:
        # Only touch a row when something improves: no rewrite (and, on PostgreSQL, no
        # row lock) for the thousands of pulls of a manifest already known.
        insert_rows(
            conn, manifests, _MANIFEST_COLUMNS, plan.rows, converted=converted,
            suffix="ON CONFLICT (repository, digest) DO UPDATE SET "
                   "first_seen = CASE WHEN excluded.first_seen < manifests.first_seen "
                   "THEN excluded.first_seen ELSE manifests.first_seen END, "
                   "media_type = COALESCE(manifests.media_type, excluded.media_type), "
                   "size = COALESCE(manifests.size, excluded.size) "
                   "WHERE excluded.first_seen < manifests.first_seen "
                   "OR (manifests.media_type IS NULL AND excluded.media_type IS NOT NULL) "
                   "OR (manifests.size IS NULL AND excluded.size IS NOT NULL)",
        )
    if plan.deletes:
        conn.execute(
            update(manifests)
            .where(manifests.c.repository == bindparam("r"),
                   manifests.c.digest == bindparam("d"),
                   or_(manifests.c.deleted_at.is_(None),
                       manifests.c.deleted_at > bindparam("t")))
            .values(deleted_at=bindparam("t")),
            plan.deletes,
        )
    if plan.repo_deletes:
        conn.execute(
            update(manifests)
            .where(manifests.c.repository == bindparam("r"),
                   manifests.c.first_seen <= bindparam("t"),
                   or_(manifests.c.deleted_at.is_(None),
                       manifests.c.deleted_at > bindparam("t")))
            .values(deleted_at=bindparam("t")),
            plan.repo_deletes,
        )
    if plan.pushed:
        # A push after a recorded delete brings the manifest back; run after the deletes
        # so a delete and a later re-push in one batch leave the manifest present.
        conn.execute(
            update(manifests)
            .where(manifests.c.repository == bindparam("r"),
                   manifests.c.digest == bindparam("d"),
                   manifests.c.deleted_at <= bindparam("t"))
            .values(deleted_at=None),
            plan.pushed,
        )


def _add_rollups(agg: _Rollups, items: Iterable[tuple[Event, Any]], *, sqlite: bool,
                 skip_pending: bool = False) -> None:
    """Count ``items`` (event, its time as stored) into ``agg`` per day, repository, digest,
    tag, action and usage, widening first/last. The day is UTC's: on SQLite the stored
    string's first 10 characters."""
    for e, t in items:
        if skip_pending and e.digest is None and _is_pending(e):
            continue
        if sqlite:
            day: Any = t[:10]
        else:
            day = (t if t.tzinfo is UTC else t.astimezone(UTC)).date()
        key = (day, e.repository, e.digest or "", e.tag or "", e.action, e.usage)
        cur = agg.get(key)
        if cur is None:
            agg[key] = [1, t, t]
        else:
            cur[0] += 1
            if t < cur[1]:
                cur[1] = t
            elif t > cur[2]:
                cur[2] = t


def _rollups_and_clients(conn: Connection, rollup: _Rollups, clients: ClientPlan,
                         deferred: Deferred | None) -> None:
    """Write a batch's rollups and distinct clients now, or leave them in ``deferred`` for
    :meth:`EventWriter.write_deferred` (same transaction)."""
    if deferred is None:
        _write_rollups(conn, rollup, sqlite=conn.dialect.name == "sqlite")
        write_clients(conn, clients)
    else:
        deferred.add(rollup, clients)


def _write_rollups(conn: Connection, agg: _Rollups, *, sqlite: bool) -> None:
    if not agg:
        return
    # Key order; on SQLite every part is a string (the day too), and sorting on the joined key
    # gives the tuples' order at a third of the CPU (clients.write_clients says why).
    keys = sorted(agg, key="\0".join) if sqlite else sorted(agg)
    rows = [(*k, v[0], v[1], v[2]) for k in keys for v in (agg[k],)]
    insert_rows(
        conn, rollups, _ROLLUP_COLUMNS, rows, converted=sqlite,
        suffix='ON CONFLICT (day, repository, digest, tag, action, usage) DO UPDATE SET '
               '"count" = rollups."count" + excluded."count", '
               "first_at = CASE WHEN excluded.first_at < rollups.first_at "
               "THEN excluded.first_at ELSE rollups.first_at END, "
               "last_at = CASE WHEN excluded.last_at > rollups.last_at "
               "THEN excluded.last_at ELSE rollups.last_at END",
    )
