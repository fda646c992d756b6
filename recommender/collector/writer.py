"""The batched writer: normalised events and pod snapshots into the store.

One call of :meth:`EventWriter.write` is one transaction, all or nothing:

1. events are inserted with ``INSERT ... ON CONFLICT (source, source_event_id) DO NOTHING
   RETURNING`` (SQLite: the inserted rowid ranges); only those rows are new, so a retried
   delivery changes nothing;
2. pushes and deletes of those new events update ``manifests`` (``first_seen``,
   ``deleted_at``) and the time-versioned ``tag_history``;
3. a pull or deploy that names only a tag gets its digest from the tag history at its time;
4. the daily ``rollups`` are upserted (count added, first/last time widened).

Several processes may write to one PostgreSQL. The rollup upsert is atomic by itself; rows are
written in key order so two batches never wait for each other's locks in opposite orders
(deadlock). The tag history is read-then-written, so its changes are serialised per repository
with a transaction-scoped advisory lock. SQLite has one writer at a time: the transaction takes
the write lock with its first statement (the insert) and holds it to the end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, delete, func, or_, select, text, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ..errors import StoreError
from ..store import Store
from ..store.tables import events, k8s_snapshots, manifests, rollups, running_refs, tag_history
from ..usage import BLOB, is_manifest_media_type
from . import taghistory
from .bulk import insert_rows, sqlite_time
from .events import Event, PodSnapshot, WriteResult

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["EventWriter"]

_INDEX_TYPES = frozenset({
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})
_PAIRS_PER_QUERY = 200
_EVENT_COLUMNS = ("time", "received_at", "source", "source_event_id", "action", "usage",
                  "registry", "repository", "digest", "tag", "media_type", "size", "method",
                  "user_agent", "actor", "client_addr", "environment", "cluster", "namespace")
_MANIFEST_COLUMNS = ("repository", "digest", "media_type", "size", "first_seen", "is_index")
_ROLLUP_COLUMNS = ("day", "repository", "digest", "tag", "action", "usage", "count",
                   "first_at", "last_at")

# A new event: (its id, the event, its time as the bulk insert stores it). On SQLite the
# time is converted to its stored string once per event and that string serves the events
# insert, the rollups (its first 10 characters are the day; fixed width, it sorts as the
# time does) and the manifests' first_seen; on PostgreSQL it is the datetime itself.
_New = tuple[int, Event, Any]


@contextmanager
def _translated() -> Iterator[None]:
    """The store's failures as :class:`StoreError` (one line in the CLI; the original stays
    the ``__cause__``, where the HTTP batcher looks to tell "store down" from "bad data")."""
    try:
        yield
    except OperationalError as exc:
        raise StoreError(f"the store refused the write: {exc.orig}", temporary=True) from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"the store refused the write: {exc}", temporary=False) from exc


# A bulk load (``tagwarden ingest`` of a file) on SQLite: a 128 MB page cache for the events'
# indexes, whose inserts land all over them (the default 2 MB makes nearly every index insert a
# page miss; at 1M events 128 MB takes a sixth of the CPU off 64 MB, and the whole command still
# peaks under 250 MB), and checkpoints every ~40 MB of WAL instead of every 4 MB (each one
# writes pages back and fsyncs). Durability is unchanged: every batch is still its own
# committed transaction, under the store's ``synchronous`` setting. Per connection: they end
# with the command.
_SQLITE_BULK = ("PRAGMA cache_size=-131072", "PRAGMA temp_store=MEMORY",
                "PRAGMA wal_autocheckpoint=10000")


class EventWriter:
    """Writes events and pod snapshots into ``store``; ``raw_retention`` bounds :meth:`prune`.

    ``bulk`` (file ingest) tunes a SQLite connection for long runs of large batches.
    """

    def __init__(self, store: Store, *, raw_retention: timedelta = timedelta(days=30),
                 bulk: bool = False) -> None:
        self.store = store
        self.raw_retention = raw_retention
        self.bulk = bulk

    @classmethod
    def from_config(cls, store: Store, config: Config, *, bulk: bool = False) -> EventWriter:
        return cls(store, raw_retention=config["store.raw_retention"], bulk=bulk)

    # --- events --------------------------------------------------------------------------------

    def write(self, batch: Sequence[Event], *, now: datetime) -> WriteResult:
        """Store ``batch`` (received at ``now``) in one transaction."""
        # The first of repeated keys wins (reversed: a later assignment overwrites).
        unique = {(ev.source, ev.source_event_id): ev for ev in reversed(batch)}
        ordered = [unique[k] for k in sorted(unique)]
        if not ordered:
            return WriteResult(received=len(batch))
        with _translated(), self.store.begin() as conn:
            if self.bulk and conn.dialect.name == "sqlite":
                for pragma in _SQLITE_BULK:
                    conn.exec_driver_sql(pragma)
            new = self._insert_events(conn, ordered, now)
            if new:
                self._apply_manifests(conn, new)
                self._apply_tag_history(conn, new)
                self._resolve_tags(conn, new)
                self._upsert_rollups(conn, new)
        return WriteResult(received=len(batch), stored=len(new),
                           duplicates=len(batch) - len(new))

    def _insert_events(self, conn: Connection, ordered: list[Event], now: datetime
                       ) -> list[_New]:
        if conn.dialect.name == "sqlite":
            stamp = sqlite_time(now)
            # sqlite_time inlined for the usual UTC time (a call per event costs as much).
            rows: list[tuple[Any, ...]] = [
                (t.isoformat(" ", "microseconds")[:26] if t.tzinfo is UTC else sqlite_time(t),
                 stamp, e.source, e.source_event_id, e.action, e.usage, e.registry,
                 e.repository, e.digest, e.tag, e.media_type, e.size, e.method, e.user_agent,
                 e.actor, e.client_addr, e.environment, e.cluster, e.namespace)
                for e in ordered for t in (e.time,)]
            stamps = [row[0] for row in rows]
            return self._insert_events_sqlite(conn, ordered, stamps, rows)
        rows = [(e.time, now, e.source, e.source_event_id, e.action, e.usage, e.registry,
                 e.repository, e.digest, e.tag, e.media_type, e.size, e.method, e.user_agent,
                 e.actor, e.client_addr, e.environment, e.cluster, e.namespace)
                for e in ordered]
        returned = insert_rows(
            conn, events, _EVENT_COLUMNS, rows,
            suffix="ON CONFLICT (source, source_event_id) DO NOTHING",
            returning="id, source, source_event_id",
        )
        by_key = {(e.source, e.source_event_id): e for e in ordered}
        out: list[_New] = []
        for row in returned:
            e = by_key[(row[1], row[2])]
            out.append((row[0], e, e.time))
        return out

    @staticmethod
    def _insert_events_sqlite(conn: Connection, ordered: list[Event], stamps: list[str],
                              rows: list[tuple[Any, ...]]) -> list[_New]:
        """The insert without ``RETURNING`` (a quarter of its cost). The transaction holds
        SQLite's write lock from this first statement on, so each statement's new rows get
        consecutive rowids in ``VALUES`` order, ending at its last rowid: a statement that
        inserted all its rows needs no answer back; one that skipped duplicates is asked
        which of its rowid range it stored."""
        spans: list[tuple[int, int, int]] = []
        insert_rows(conn, events, _EVENT_COLUMNS, rows,
                    suffix="ON CONFLICT (source, source_event_id) DO NOTHING", spans=spans,
                    converted=True)
        new: list[_New] = []
        start = 0
        for sent, inserted, last in spans:
            end = start + sent
            if inserted == sent:
                new.extend(zip(range(last - sent + 1, last + 1), ordered[start:end],
                               stamps[start:end], strict=True))
            elif inserted > 0:
                by_key = {(e.source, e.source_event_id): (e, t)
                          for e, t in zip(ordered[start:end], stamps[start:end], strict=True)}
                c = events.c
                for row in conn.execute(select(c.id, c.source, c.source_event_id)
                                        .where(c.id.between(last - inserted + 1, last))):
                    e, t = by_key[(row[1], row[2])]
                    new.append((row[0], e, t))
            start = end
        return new

    def _apply_manifests(self, conn: Connection, new: list[_New]) -> None:
        """``first_seen`` from every sighting (push, pull, mount), ``deleted_at`` from deletes."""
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        deletes: list[dict[str, Any]] = []
        pushed_rows: list[dict[str, Any]] = []
        repo_deletes: list[dict[str, Any]] = []
        # A batch carries a handful of media types: each is looked up once.
        is_manifest: dict[str | None, bool] = {None: True, "": True}
        for _, e, stamp in new:
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
        if seen:
            rows = [seen[k] for k in sorted(seen)]
            pushed_rows = [r for r in rows if r["pushed"] is not None]
            # Only touch a row when something improves: no rewrite (and, on PostgreSQL, no
            # row lock) for the thousands of pulls of a manifest already known.
            insert_rows(
                conn, manifests, _MANIFEST_COLUMNS,
                [(r["repository"], r["digest"], r["media_type"], r["size"], r["first_seen"],
                  r["is_index"]) for r in rows],
                converted=conn.dialect.name == "sqlite",
                suffix="ON CONFLICT (repository, digest) DO UPDATE SET "
                       "first_seen = CASE WHEN excluded.first_seen < manifests.first_seen "
                       "THEN excluded.first_seen ELSE manifests.first_seen END, "
                       "media_type = COALESCE(manifests.media_type, excluded.media_type), "
                       "size = COALESCE(manifests.size, excluded.size) "
                       "WHERE excluded.first_seen < manifests.first_seen "
                       "OR (manifests.media_type IS NULL AND excluded.media_type IS NOT NULL) "
                       "OR (manifests.size IS NULL AND excluded.size IS NOT NULL)",
            )
        if deletes:
            conn.execute(
                update(manifests)
                .where(manifests.c.repository == bindparam("r"),
                       manifests.c.digest == bindparam("d"),
                       or_(manifests.c.deleted_at.is_(None),
                           manifests.c.deleted_at > bindparam("t")))
                .values(deleted_at=bindparam("t")),
                deletes,
            )
        if repo_deletes:
            conn.execute(
                update(manifests)
                .where(manifests.c.repository == bindparam("r"),
                       manifests.c.first_seen <= bindparam("t"),
                       or_(manifests.c.deleted_at.is_(None),
                           manifests.c.deleted_at > bindparam("t")))
                .values(deleted_at=bindparam("t")),
                repo_deletes,
            )
        if pushed_rows:
            # A push after a recorded delete brings the manifest back; run after the deletes
            # so a delete and a later re-push in one batch leave the manifest present.
            conn.execute(
                update(manifests)
                .where(manifests.c.repository == bindparam("r"),
                       manifests.c.digest == bindparam("d"),
                       manifests.c.deleted_at <= bindparam("t"))
                .values(deleted_at=None),
                [{"r": r["repository"], "d": r["digest"], "t": r["pushed"]}
                 for r in pushed_rows],
            )

    def _apply_tag_history(self, conn: Connection, new: list[_New]) -> None:
        changes = [  # the action first: it rules out nearly every event at once
            (e.time, i, e) for i, e, _ in new
            if ((e.action == "push" and e.tag and e.digest)
                or e.action == "delete")  # of a manifest, a tag or a whole repository
            and e.usage != BLOB
        ]
        if not changes:
            return
        changes.sort(key=lambda c: (c[0], c[1]))  # time order; one time: arrival order
        self._lock_repositories(conn, {e.repository for _, _, e in changes})
        taghistory.apply_changes(conn, [e for _, _, e in changes])

    def _lock_repositories(self, conn: Connection, repositories: Iterable[str]) -> None:
        if conn.dialect.name != "postgresql":
            return  # SQLite: the transaction already holds the database's write lock
        for repo in sorted(repositories):  # one order everywhere: no deadlocks
            key = int.from_bytes(hashlib.blake2b(b"tag_history:" + repo.encode(),
                                                 digest_size=8).digest(), "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def _resolve_tags(self, conn: Connection, new: list[_New]) -> None:
        """Give a tag-only pull or deploy the digest its tag pointed at, at its time."""
        pending = [(i, e) for i, e, _ in new
                   if e.digest is None and e.tag and e.action in ("pull", "deploy")]
        if not pending:
            return
        pairs = sorted({(e.repository, e.tag or "") for _, e in pending})
        history: dict[tuple[str, str], list[tuple[datetime, datetime | None, str]]] = {}
        th = tag_history.c
        for start in range(0, len(pairs), _PAIRS_PER_QUERY):
            chunk = pairs[start:start + _PAIRS_PER_QUERY]
            wanted = set(chunk)
            for row in conn.execute(
                select(th.repository, th.tag, th.valid_from, th.valid_to, th.digest).where(
                    th.repository.in_({r for r, _ in chunk}), th.tag.in_({t for _, t in chunk}))
            ):
                if (row[0], row[1]) in wanted:
                    history.setdefault((row[0], row[1]), []).append((row[2], row[3], row[4]))
        updates = []
        for event_id, e in pending:
            for valid_from, valid_to, digest in history.get((e.repository, e.tag or ""), ()):
                if valid_from <= e.time and (valid_to is None or e.time < valid_to):
                    e.digest = digest
                    updates.append({"i": event_id, "d": digest})
                    break
        if updates:
            conn.execute(update(events).where(events.c.id == bindparam("i"))
                         .values(digest=bindparam("d")), updates)

    def _upsert_rollups(self, conn: Connection, new: list[_New]) -> None:
        sqlite = conn.dialect.name == "sqlite"
        days = [t[:10] for _, _, t in new] if sqlite else [
            (t if t.tzinfo is UTC else t.astimezone(UTC)).date() for _, _, t in new]  # UTC day
        agg: dict[tuple[date | str, str, str, str, str, str], list[Any]] = {}
        for (_, e, t), day in zip(new, days, strict=True):
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
        rows = [(*k, v[0], v[1], v[2]) for k, v in sorted(agg.items())]
        insert_rows(
            conn, rollups, _ROLLUP_COLUMNS, rows, converted=sqlite,
            suffix='ON CONFLICT (day, repository, digest, tag, action, usage) DO UPDATE SET '
                   '"count" = rollups."count" + excluded."count", '
                   "first_at = CASE WHEN excluded.first_at < rollups.first_at "
                   "THEN excluded.first_at ELSE rollups.first_at END, "
                   "last_at = CASE WHEN excluded.last_at > rollups.last_at "
                   "THEN excluded.last_at ELSE rollups.last_at END",
        )

    def prune(self, now: datetime) -> int:
        """Delete raw events older than the retention; rollups stay. Returns how many.

        Deploy events are kept: they are few, and their environment (which rollups do not
        carry) is what the production guardrails (keep-last-N deployed, deployed within N
        days) read, however old.
        """
        cutoff = now - self.raw_retention
        with _translated(), self.store.begin() as conn:
            result = conn.execute(
                delete(events).where(events.c.time < cutoff, events.c.action != "deploy"))
        return int(result.rowcount or 0)

    # --- pod snapshots -------------------------------------------------------------------------

    def write_snapshot(self, snapshot: PodSnapshot) -> int:
        """Store one pod list; returns how many running references it holds.

        Idempotent: a snapshot of the same source at the same time is stored once.
        """
        with _translated(), self.store.begin() as conn:
            if conn.dialect.name == "postgresql":
                key = int.from_bytes(hashlib.blake2b(b"k8s:" + snapshot.source.encode(),
                                                     digest_size=8).digest(), "big", signed=True)
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            existing = conn.execute(
                select(k8s_snapshots.c.id).where(k8s_snapshots.c.source == snapshot.source,
                                                 k8s_snapshots.c.taken_at == snapshot.taken_at)
            ).first()
            if existing is not None:
                return int(conn.execute(
                    select(func.count()).select_from(running_refs)
                    .where(running_refs.c.snapshot_id == existing[0])
                ).scalar_one())
            snapshot_id = conn.execute(
                k8s_snapshots.insert().values(source=snapshot.source, taken_at=snapshot.taken_at,
                                              pods=snapshot.pods).returning(k8s_snapshots.c.id)
            ).scalar_one()
            if snapshot.refs:
                conn.execute(running_refs.insert(), [{
                    "snapshot_id": snapshot_id, "registry": r.registry,
                    "repository": r.repository, "digest": r.digest, "tag": r.tag,
                    "namespace": r.namespace, "pod": r.pod, "container": r.container,
                    "container_kind": r.container_kind, "image": r.image,
                } for r in snapshot.refs])
        return len(snapshot.refs)

