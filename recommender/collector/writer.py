"""The batched writer: normalised events and pod snapshots into the store.

One call of :meth:`EventWriter.write` is one transaction, all or nothing:

1. events are inserted with ``INSERT ... ON CONFLICT (source, source_event_id) DO NOTHING
   RETURNING``; only the rows that come back are new, so a retried delivery changes nothing;
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
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, bindparam, case, delete, func, or_, select, text, update

from ..store import Store, dialect_insert
from ..store.tables import events, k8s_snapshots, manifests, rollups, running_refs, tag_history
from ..usage import BLOB, is_manifest_media_type
from .events import Event, PodSnapshot, WriteResult

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["EventWriter"]

_INDEX_TYPES = frozenset({
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})
_PAIRS_PER_QUERY = 200


class EventWriter:
    """Writes events and pod snapshots into ``store``; ``raw_retention`` bounds :meth:`prune`."""

    def __init__(self, store: Store, *, raw_retention: timedelta = timedelta(days=30)) -> None:
        self.store = store
        self.raw_retention = raw_retention

    @classmethod
    def from_config(cls, store: Store, config: Config) -> EventWriter:
        return cls(store, raw_retention=config["store.raw_retention"])

    # --- events --------------------------------------------------------------------------------

    def write(self, batch: Sequence[Event], *, now: datetime) -> WriteResult:
        """Store ``batch`` (received at ``now``) in one transaction."""
        unique: dict[tuple[str, str], Event] = {}
        for ev in batch:
            unique.setdefault((ev.source, ev.source_event_id), ev)
        ordered = [unique[k] for k in sorted(unique)]
        if not ordered:
            return WriteResult(received=len(batch))
        with self.store.begin() as conn:
            new = self._insert_events(conn, ordered, now)
            if new:
                self._apply_manifests(conn, new)
                self._apply_tag_history(conn, new)
                self._resolve_tags(conn, new)
                self._upsert_rollups(conn, new)
        return WriteResult(received=len(batch), stored=len(new),
                           duplicates=len(batch) - len(new))

    def _insert_events(self, conn: Connection, ordered: list[Event], now: datetime
                       ) -> list[tuple[int, Event]]:
        rows = [{
            "time": e.time, "received_at": now, "source": e.source,
            "source_event_id": e.source_event_id, "action": e.action, "usage": e.usage,
            "registry": e.registry, "repository": e.repository, "digest": e.digest,
            "tag": e.tag, "media_type": e.media_type, "size": e.size, "method": e.method,
            "user_agent": e.user_agent, "actor": e.actor, "client_addr": e.client_addr,
            "environment": e.environment, "cluster": e.cluster, "namespace": e.namespace,
        } for e in ordered]
        insert: Any = dialect_insert(conn, events)
        stmt = (
            insert.on_conflict_do_nothing(index_elements=["source", "source_event_id"])
            .returning(events.c.id, events.c.source, events.c.source_event_id)
        )
        by_key = {(e.source, e.source_event_id): e for e in ordered}
        result = conn.execute(stmt, rows)
        new = [(row[0], by_key[(row[1], row[2])]) for row in result]
        new.sort(key=lambda item: (item[1].time, item[0]))  # time order for the tag history
        return new

    def _apply_manifests(self, conn: Connection, new: list[tuple[int, Event]]) -> None:
        """``first_seen`` from every sighting (push, pull, mount), ``deleted_at`` from deletes."""
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        deletes: list[dict[str, Any]] = []
        for _, e in new:
            if e.digest is None or e.usage == BLOB:
                continue
            if e.action == "delete":
                deletes.append({"r": e.repository, "d": e.digest, "t": e.time})
                continue
            if e.media_type and not is_manifest_media_type(e.media_type):
                continue
            key = (e.repository, e.digest)
            row = seen.get(key)
            pushed = e.time if e.action == "push" else None
            if row is None:
                seen[key] = {
                    "repository": e.repository, "digest": e.digest, "media_type": e.media_type,
                    "size": e.size, "first_seen": e.time, "pushed": pushed,
                    "is_index": e.media_type in _INDEX_TYPES,
                }
            else:
                row["first_seen"] = min(row["first_seen"], e.time)
                row["media_type"] = row["media_type"] or e.media_type
                row["size"] = row["size"] if row["size"] is not None else e.size
                row["is_index"] = row["is_index"] or e.media_type in _INDEX_TYPES
                if pushed is not None:
                    row["pushed"] = max(row["pushed"] or pushed, pushed)
        if seen:
            rows = [seen[k] for k in sorted(seen)]
            pushed_rows = [r for r in rows if r["pushed"] is not None]
            plain = [{k: v for k, v in r.items() if k != "pushed"} for r in rows]
            stmt: Any = dialect_insert(conn, manifests)
            cur = manifests.c
            stmt = stmt.on_conflict_do_update(
                index_elements=["repository", "digest"],
                set_={
                    "first_seen": case((stmt.excluded.first_seen < cur.first_seen,
                                        stmt.excluded.first_seen), else_=cur.first_seen),
                    "media_type": func.coalesce(cur.media_type, stmt.excluded.media_type),
                    "size": func.coalesce(cur.size, stmt.excluded.size),
                },
            )
            conn.execute(stmt, plain)
            if pushed_rows:
                # A push after a recorded delete brings the manifest back.
                conn.execute(
                    update(manifests)
                    .where(manifests.c.repository == bindparam("r"),
                           manifests.c.digest == bindparam("d"),
                           manifests.c.deleted_at <= bindparam("t"))
                    .values(deleted_at=None),
                    [{"r": r["repository"], "d": r["digest"], "t": r["pushed"]}
                     for r in pushed_rows],
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

    def _apply_tag_history(self, conn: Connection, new: list[tuple[int, Event]]) -> None:
        changes = [
            e for _, e in new
            if e.usage != BLOB and (
                (e.action == "push" and e.tag and e.digest)
                or (e.action == "delete" and (e.digest or e.tag))
            )
        ]
        if not changes:
            return
        self._lock_repositories(conn, {e.repository for e in changes})
        for e in changes:  # already in time order
            if e.action == "push":
                assert e.tag is not None and e.digest is not None
                _tag_pushed(conn, e.repository, e.tag, e.digest, e.time)
            elif e.digest is not None:
                _manifest_deleted(conn, e.repository, e.digest, e.time)
            else:
                assert e.tag is not None
                _tag_deleted(conn, e.repository, e.tag, e.time)

    def _lock_repositories(self, conn: Connection, repositories: Iterable[str]) -> None:
        if conn.dialect.name != "postgresql":
            return  # SQLite: the transaction already holds the database's write lock
        for repo in sorted(repositories):  # one order everywhere: no deadlocks
            key = int.from_bytes(hashlib.blake2b(b"tag_history:" + repo.encode(),
                                                 digest_size=8).digest(), "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def _resolve_tags(self, conn: Connection, new: list[tuple[int, Event]]) -> None:
        """Give a tag-only pull or deploy the digest its tag pointed at, at its time."""
        pending = [(i, e) for i, e in new
                   if e.digest is None and e.tag and e.action in ("pull", "deploy")]
        if not pending:
            return
        pairs = sorted({(e.repository, e.tag or "") for _, e in pending})
        history: dict[tuple[str, str], list[tuple[datetime, datetime | None, str]]] = {}
        th = tag_history.c
        for start in range(0, len(pairs), _PAIRS_PER_QUERY):
            chunk = pairs[start:start + _PAIRS_PER_QUERY]
            cond = or_(*(and_(th.repository == r, th.tag == t) for r, t in chunk))
            for row in conn.execute(
                select(th.repository, th.tag, th.valid_from, th.valid_to, th.digest).where(cond)
            ):
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

    def _upsert_rollups(self, conn: Connection, new: list[tuple[int, Event]]) -> None:
        agg: dict[tuple[date, str, str, str, str, str], list[Any]] = {}
        for _, e in new:
            key = (e.time.date(), e.repository, e.digest or "", e.tag or "", e.action, e.usage)
            cur = agg.get(key)
            if cur is None:
                agg[key] = [1, e.time, e.time]
            else:
                cur[0] += 1
                if e.time < cur[1]:
                    cur[1] = e.time
                if e.time > cur[2]:
                    cur[2] = e.time
        rows = [{"day": k[0], "repository": k[1], "digest": k[2], "tag": k[3], "action": k[4],
                 "usage": k[5], "count": v[0], "first_at": v[1], "last_at": v[2]}
                for k, v in sorted(agg.items())]
        stmt: Any = dialect_insert(conn, rollups)
        ex, cur_ = stmt.excluded, rollups.c
        stmt = stmt.on_conflict_do_update(
            index_elements=["day", "repository", "digest", "tag", "action", "usage"],
            set_={
                "count": cur_["count"] + ex["count"],
                "first_at": case((ex.first_at < cur_.first_at, ex.first_at),
                                 else_=cur_.first_at),
                "last_at": case((ex.last_at > cur_.last_at, ex.last_at), else_=cur_.last_at),
            },
        )
        conn.execute(stmt, rows)

    def prune(self, now: datetime) -> int:
        """Delete raw events older than the retention; rollups stay. Returns how many."""
        cutoff = now - self.raw_retention
        with self.store.begin() as conn:
            result = conn.execute(delete(events).where(events.c.time < cutoff))
        return int(result.rowcount or 0)

    # --- pod snapshots -------------------------------------------------------------------------

    def write_snapshot(self, snapshot: PodSnapshot) -> int:
        """Store one pod list; returns how many running references it holds.

        Idempotent: a snapshot of the same source at the same time is stored once.
        """
        with self.store.begin() as conn:
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


# --- tag history steps (the caller holds the repository's lock) ---------------------------------

def _interval_at(conn: Connection, repo: str, tag: str, t: datetime) -> Any:
    th = tag_history.c
    return conn.execute(
        select(th.id, th.digest, th.valid_from, th.valid_to)
        .where(th.repository == repo, th.tag == tag, th.valid_from <= t,
               or_(th.valid_to.is_(None), th.valid_to > t))
        .order_by(th.valid_from.desc()).limit(1)
    ).first()


def _tag_pushed(conn: Connection, repo: str, tag: str, digest: str, t: datetime) -> None:
    """``tag`` points at ``digest`` from ``t``: split the interval that held ``t``.

    Every push is kept as the start of its own interval, even when the digest does not change:
    merging would forget a point that a push arriving late (out of order) needs in order to
    end where the next known push begins. A push into a gap (after a delete, or before
    everything known) ends where the next known interval starts.
    """
    th = tag_history.c
    cur = _interval_at(conn, repo, tag, t)
    if cur is not None:
        if cur.valid_from == t:  # two pushes at the same instant: the later message wins
            if cur.digest != digest:
                conn.execute(update(tag_history).where(th.id == cur.id).values(digest=digest))
            return
        conn.execute(update(tag_history).where(th.id == cur.id).values(valid_to=t))
        end = cur.valid_to
    else:
        nxt = conn.execute(
            select(th.valid_from).where(th.repository == repo, th.tag == tag, th.valid_from >= t)
            .order_by(th.valid_from).limit(1)
        ).first()
        if nxt is not None and nxt.valid_from == t:
            return  # an empty interval [t, t) starts here: a delete at the push's instant
        end = nxt.valid_from if nxt is not None else None
    conn.execute(tag_history.insert().values(repository=repo, tag=tag, digest=digest,
                                             valid_from=t, valid_to=end, source="push"))


def _tag_deleted(conn: Connection, repo: str, tag: str, t: datetime) -> None:
    th = tag_history.c
    cur = _interval_at(conn, repo, tag, t)
    if cur is None:
        return
    if cur.valid_from == t:
        conn.execute(delete(tag_history).where(th.id == cur.id))
    else:
        conn.execute(update(tag_history).where(th.id == cur.id).values(valid_to=t))


def _manifest_deleted(conn: Connection, repo: str, digest: str, t: datetime) -> None:
    """Deleting a manifest removes every tag on it: close each interval open at ``t``."""
    th = tag_history.c
    conn.execute(
        update(tag_history)
        .where(th.repository == repo, th.digest == digest, th.valid_from <= t,
               or_(th.valid_to.is_(None), th.valid_to > t))
        .values(valid_to=t)
    )
