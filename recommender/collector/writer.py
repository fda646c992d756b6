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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, delete, func, or_, select, text, update

from ..errors import StoreError
from ..store import Store
from ..store.failures import translated
from ..store.tables import events, k8s_snapshots, manifests, rollups, running_refs, tag_history
from ..usage import BLOB, is_manifest_media_type
from . import taghistory
from .bulk import flat_rows, insert_flat, insert_rows, sqlite_time
from .clients import ClientItem, ClientPlan, plan_clients, write_clients
from .events import Event, PodSnapshot, WriteResult

if TYPE_CHECKING:
    from ..config import Config
    from .checkpoint import Checkpointer

__all__ = ["Deferred", "EventWriter", "PreparedBatch", "prepare"]

_INDEX_TYPES = frozenset({
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
})
_PAIRS_PER_QUERY = 200
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

# A new event: (its id, the event, its time as the bulk insert stores it). On SQLite the
# time is converted to its stored string once per event and that string serves the events
# insert, the rollups (its first 10 characters are the day; fixed width, it sorts as the
# time does) and the manifests' first_seen; on PostgreSQL it is the datetime itself.
_New = tuple[int, Event, Any]


# A bulk load (``tagwarden ingest`` of a file) on SQLite: a larger page cache for the indexes,
# whose inserts land all over them (with SQLite's small default nearly every index insert is a
# page miss). Beyond a modest size the writer's CPU no longer changes (bench/), so the size
# below leaves room under the ingest's memory cap.
# Durability is unchanged: every transaction commits under the store's ``synchronous``
# setting. Per connection: they end with the command.
_SQLITE_BULK = ("PRAGMA cache_size=-98304", "PRAGMA temp_store=MEMORY")
# The writer's own checkpoints: every 10,000 WAL pages instead of SQLite's 1,000 (each one
# writes pages back and fsyncs). With a Checkpointer copying the WAL back after each commit,
# they only bound the WAL, at 40,000 pages, and find little left to copy
# (collector/checkpoint.py).
_OWN_CHECKPOINTS = "PRAGMA wal_autocheckpoint=10000"
_SHARED_CHECKPOINTS = "PRAGMA wal_autocheckpoint=40000"


class EventWriter:
    """Writes events and pod snapshots into ``store``; ``raw_retention`` bounds :meth:`prune`.

    ``bulk`` (file ingest) tunes a SQLite connection for long runs of large batches;
    ``checkpointer`` (SQLite) is told of each commit of :meth:`transaction`, and copies the
    WAL back meanwhile.
    """

    def __init__(self, store: Store, *, raw_retention: timedelta = timedelta(days=30),
                 bulk: bool = False, checkpointer: Checkpointer | None = None) -> None:
        self.store = store
        self.raw_retention = raw_retention
        self.bulk = bulk
        self.checkpointer = checkpointer

    @classmethod
    def from_config(cls, store: Store, config: Config, *, bulk: bool = False,
                    checkpointer: Checkpointer | None = None) -> EventWriter:
        return cls(store, raw_retention=config["store.raw_retention"], bulk=bulk,
                   checkpointer=checkpointer)

    # --- events --------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction for several writes (pass it as their ``conn``): committed when the
        block ends, rolled back if it raises; the store's failures as :class:`StoreError`.
        A bulk load groups batches this way (:mod:`recommender.collector.groupcommit`)."""
        with translated(), self.store.begin() as conn:
            if self.bulk and conn.dialect.name == "sqlite":
                for pragma in _SQLITE_BULK:  # once per transaction, not once per batch
                    conn.exec_driver_sql(pragma)
                conn.exec_driver_sql(_OWN_CHECKPOINTS if self.checkpointer is None
                                     else _SHARED_CHECKPOINTS)
            yield conn
        if self.checkpointer is not None:
            self.checkpointer.committed()

    @contextmanager
    def _within(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is None:
            with self.transaction() as own:
                yield own
        else:
            with translated():
                yield conn

    def write(self, batch: Sequence[Event], *, now: datetime, conn: Connection | None = None,
              deferred: Deferred | None = None) -> WriteResult:
        """Store ``batch`` (received at ``now``) in one transaction, or in the caller's
        ``conn`` (from :meth:`transaction`), which then commits it. With ``deferred`` its
        rollups and clients wait there for :meth:`write_deferred` (same transaction).

        Without ``conn``, duplicates are compared with what is stored under their id:
        ``conflicting`` in the result (see :meth:`conflicting`)."""
        result = self._write(batch, now=now, conn=conn, deferred=deferred)
        if result.duplicates and conn is None:  # committed: what it kept can be read back
            result.conflicting = self.conflicting(batch)
        return result

    def _write(self, batch: Sequence[Event], *, now: datetime, conn: Connection | None,
               deferred: Deferred | None) -> WriteResult:
        if self.store.dialect == "sqlite":
            return self.write_prepared(prepare(batch, now=now), conn=conn, deferred=deferred)
        # The first of repeated keys wins (reversed: a later assignment overwrites).
        unique = {(ev.source, ev.source_event_id): ev for ev in reversed(batch)}
        ordered = [unique[k] for k in sorted(unique, key="\0".join)]  # key order (as rollups)
        if not ordered:
            return WriteResult(received=len(batch))
        with self._within(conn) as conn:
            new = self._insert_events(conn, ordered, now)
            if new:
                _write_manifests(conn, _plan_manifests((e, e.time) for _, e, _ in new),
                                 converted=False)
                self._apply_tag_history(conn, [(i, e) for i, e, _ in new if _is_change(e)])
                self._resolve_tags(conn, [(i, e) for i, e, _ in new if _is_pending(e)])
                rollup: _Rollups = {}
                _add_rollups(rollup, ((e, e.time) for _, e, _ in new), sqlite=False)
                # After _resolve_tags: a tag-only pull has its digest by now.
                clients = plan_clients(_client_items((e, t) for _, e, t in new))
                _rollups_and_clients(conn, rollup, clients, deferred)
        return WriteResult(received=len(batch), stored=len(new),
                           duplicates=len(batch) - len(new))

    def conflicting(self, batch: Sequence[Event]) -> list[int]:
        """Positions in ``batch`` of events whose id is stored with other content.

        A retried delivery repeats an event exactly; the same id with another time, digest
        or tag means the sender reuses ids, and the event is lost (the first one is kept).
        A digest the event does not carry is not compared: the writer fills in a tag-only
        deploy's digest from the tag history.
        """
        ids: dict[str, set[str]] = {}
        for e in batch:
            ids.setdefault(e.source, set()).add(e.source_event_id)
        c = events.c
        columns = [c.source, c.source_event_id, *(c[name] for name in _CONTENT_COLUMNS)]
        stored: dict[tuple[str, str], tuple[Any, ...]] = {}
        with translated(), self.store.connect() as conn:
            for source, keys in ids.items():
                ordered = sorted(keys)
                for start in range(0, len(ordered), _PAIRS_PER_QUERY):
                    chunk = ordered[start:start + _PAIRS_PER_QUERY]
                    for row in conn.execute(select(*columns).where(
                            c.source == source, c.source_event_id.in_(chunk))):
                        stored[(row[0], row[1])] = tuple(row[2:])
        return [i for i, e in enumerate(batch)
                if _differs(e, stored.get((e.source, e.source_event_id)))]

    def write_prepared(self, batch: PreparedBatch, *, conn: Connection | None = None,
                       deferred: Deferred | None = None) -> WriteResult:
        """Store a batch made by :func:`prepare` in one transaction, or in the caller's
        ``conn`` (SQLite only); ``deferred`` as in :meth:`write`.

        Its manifests and rollups were planned as if every event were new: when some were
        duplicates, they are planned again here from the events this insert did store.
        """
        if not batch.count:
            return WriteResult(received=batch.received)
        with self._within(conn) as conn:
            if conn.dialect.name != "sqlite":
                raise StoreError("a prepared batch is for SQLite", dialect=conn.dialect.name)
            spans: list[tuple[int, int, int]] = []
            insert_flat(conn, events, _EVENT_COLUMNS, batch.statements,
                        suffix="ON CONFLICT (source, source_event_id) DO NOTHING", spans=spans)
            stored = sum(inserted for _, inserted, _ in spans)
            if stored == batch.count:
                # The transaction holds SQLite's write lock from the insert on, so each
                # statement's rows got consecutive rowids ending at its last one.
                ids = list(chain.from_iterable(range(last - sent + 1, last + 1)
                                               for sent, _, last in spans))
                plan, rollup, clients = batch.manifests, batch.rollups, dict(batch.clients)
                special = [(ids[pos], e) for pos, e in batch.special]
            elif stored:
                new = self._stored_rows(conn, batch.rows(), spans)
                plan = _plan_manifests((e, t) for _, e, t in new)
                rollup = {}
                _add_rollups(rollup, ((e, t) for _, e, t in new), sqlite=True,
                             skip_pending=True)
                clients = plan_clients(_client_items((e, t) for _, e, t in new))
                special = [(i, e) for i, e, _ in new if _is_change(e) or _is_pending(e)]
            if stored:
                _write_manifests(conn, plan, converted=True)
                self._apply_tag_history(conn, [(i, e) for i, e in special if _is_change(e)])
                pending = [(i, e) for i, e in special if _is_pending(e)]
                self._resolve_tags(conn, pending)  # gives them their digest, then rolled up
                _add_rollups(rollup, ((e, sqlite_time(e.time)) for _, e in pending),
                             sqlite=True)
                plan_clients(_client_items((e, sqlite_time(e.time)) for _, e in pending),
                             into=clients)
                _rollups_and_clients(conn, rollup, clients, deferred)
        return WriteResult(received=batch.received, stored=stored,
                           duplicates=batch.received - stored)

    def write_deferred(self, conn: Connection, deferred: Deferred) -> None:
        """Write what ``deferred`` gathered, in the transaction of the writes that gathered it
        (before it commits), and empty it."""
        with translated():
            _rollups_and_clients(conn, deferred.rollups, deferred.clients, None)
        deferred.rollups, deferred.clients = {}, {}

    def _insert_events(self, conn: Connection, ordered: list[Event], now: datetime
                       ) -> list[_New]:
        """PostgreSQL: ``RETURNING`` says which rows are new."""
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
    def _stored_rows(conn: Connection, rows: list[tuple[Any, ...]],
                     spans: list[tuple[int, int, int]]) -> list[_New]:
        """SQLite, when some rows were duplicates: the new ones, as events. A statement that
        inserted all its rows needs no answer back (consecutive rowids, see above); one that
        skipped duplicates is asked which of its rowid range it stored."""
        new: list[_New] = []
        start = 0
        for sent, inserted, last in spans:
            end = start + sent
            if inserted == sent:
                new.extend((i, _event_of(row), row[0])
                           for i, row in zip(range(last - sent + 1, last + 1), rows[start:end],
                                             strict=True))
            elif inserted > 0:
                by_key = {(row[2], row[3]): row for row in rows[start:end]}
                c = events.c
                for found in conn.execute(select(c.id, c.source, c.source_event_id)
                                          .where(c.id.between(last - inserted + 1, last))):
                    row = by_key[(found[1], found[2])]
                    new.append((found[0], _event_of(row), row[0]))
            start = end
        return new

    def _apply_tag_history(self, conn: Connection, changes: list[tuple[int, Event]]) -> None:
        if not changes:
            return
        changes = sorted(changes, key=lambda c: (c[1].time, c[0]))  # time; then arrival
        self._lock_repositories(conn, {e.repository for _, e in changes})
        taghistory.apply_changes(conn, [e for _, e in changes])

    def _lock_repositories(self, conn: Connection, repositories: Iterable[str]) -> None:
        if conn.dialect.name != "postgresql":
            return  # SQLite: the transaction already holds the database's write lock
        for repo in sorted(repositories):  # one order everywhere: no deadlocks
            key = int.from_bytes(hashlib.blake2b(b"tag_history:" + repo.encode(),
                                                 digest_size=8).digest(), "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def _resolve_tags(self, conn: Connection, pending: list[tuple[int, Event]]) -> None:
        """Give a tag-only pull or deploy the digest its tag pointed at, at its time."""
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

    def prune(self, now: datetime) -> int:
        """Delete raw events older than the retention; rollups stay. Returns how many.

        Deploy events are kept: they are few, and their environment (which rollups do not
        carry) is what the production guardrails (keep-last-N deployed, deployed within N
        days) read, however old.
        """
        cutoff = now - self.raw_retention
        with translated(), self.store.begin() as conn:
            result = conn.execute(
                delete(events).where(events.c.time < cutoff, events.c.action != "deploy"))
        return int(result.rowcount or 0)

    # --- pod snapshots -------------------------------------------------------------------------

    def write_snapshot(self, snapshot: PodSnapshot) -> int:
        """Store one pod list; returns how many running references it holds.

        Idempotent: a snapshot of the same source at the same time is stored once.
        """
        with translated(), self.store.begin() as conn:
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
    not once per batch (1M events: 204,381 rollup upserts instead of 373,799)."""

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
