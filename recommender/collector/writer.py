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
from datetime import datetime, timedelta
from itertools import chain
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, delete, func, select, text, update

from ..errors import StoreError
from ..store import Store
from ..store.failures import translated
from ..store.tables import events, k8s_snapshots, running_refs, tag_history
from . import taghistory
from .bulk import insert_flat, insert_rows, sqlite_time
from .clients import plan_clients
from .events import Event, PodSnapshot, WriteResult
from .prepared import (
    _CONTENT_COLUMNS,
    _EVENT_COLUMNS,
    Deferred,
    PreparedBatch,
    _add_rollups,
    _client_items,
    _differs,
    _event_of,
    _is_change,
    _is_pending,
    _plan_manifests,
    _Rollups,
    _rollups_and_clients,
    _write_manifests,
    prepare,
)

if TYPE_CHECKING:
    from ..config import Config
    from .checkpoint import Checkpointer

__all__ = ["Deferred", "EventWriter", "PreparedBatch", "prepare"]

_PAIRS_PER_QUERY = 200

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

