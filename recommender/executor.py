"""The executor: deletes approved, due items after a last re-check, at most once, audited.

Per item: approved -> (due) -> executing -> deleted | skipped | failed (or back to approved with
``next_attempt_at`` after a temporary registry error). An item is leased before anything
happens to it (owner + expiry, one atomic UPDATE), so two workers never run the same item and
a crashed worker's item is taken again once its lease has expired.

The steps for one item, each with its reason to be there:

1. Store re-checks: a ``use`` since the suggestion (the item or, for an index, a child), a pod
   running it now, a tag added since the suggestion, a guardrail that now keeps it.
2. ``HEAD`` by digest: already gone (someone else, or our own DELETE before a crash) is
   recorded as deleted without a second DELETE.
3. Every tag re-resolved with the full ``Accept`` list (a partial list can yield another
   digest for the same tag): a tag that now names another digest means the approval was given
   on facts that changed (a re-push, a rollback under way) -- skip; the next suggestion decides.
   And every tag of the repository, as the registry lists it: one put on the digest since
   (a promotion whose notification was lost) would go with the DELETE -- skip.
4. A referrer (signature, attestation, SBOM) or a platform child runs after the other items
   and only once its subject or index is gone: a kept image keeps its signatures and platforms.
5. "executing" and the re-check results are committed with their audit rows, then the optional
   backup, then ``DELETE`` by digest, then the result with its audit rows. A crash between
   DELETE and the record is healed by step 2 on the retry.

Every registry call goes through :class:`CallLog`'s transport and lands in the audit log with
the item it was made for (method, redacted URL, status).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Connection, and_, false, func, or_, select, update

from .audit import AuditLog
from .config import Config
from .decisions import ACTIVE_ITEM_STATES, BatchState, ItemState
from .errors import NotFound, RegistryError, TagwardenError
from .registry.auth import RegistryAuth
from .registry.client import RegistryClient, redact_url, referrer_kind, retry_after
from .store import Store
from .store.tables import (
    approvals,
    batch_items,
    batches,
    k8s_snapshots,
    manifest_children,
    manifests,
    rollups,
    running_refs,
    tag_history,
)

__all__ = [
    "CallLog",
    "DueItem",
    "ExecutionReport",
    "Executor",
    "ItemOutcome",
    "gc_command",
    "guardrails",
    "make_registry_client",
]

ACTOR = "tagwarden-executor"
LEASE_CHUNK = 64  # items leased at once: a few seconds of work (bench/, "Executor")


class CallLog:
    """Records registry calls per thread: each worker thread works on one item at a time."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _calls(self) -> list[dict[str, Any]]:
        calls = getattr(self._local, "calls", None)
        if calls is None:
            calls = self._local.calls = []
        return calls  # type: ignore[no-any-return]

    def record(self, method: str, url: str, status: int | str,
               retry_after: float | None = None) -> None:
        call: dict[str, Any] = {"method": method, "url": redact_url(url), "status": status}
        if retry_after is not None:
            call["retry_after"] = retry_after
        self._calls().append(call)

    def drain(self) -> list[dict[str, Any]]:
        calls = self._calls()
        self._local.calls = []
        return calls

    def transport(self, inner: httpx.BaseTransport | None = None) -> httpx.BaseTransport:
        return _RecordingTransport(self, inner or httpx.HTTPTransport())


class _RecordingTransport(httpx.BaseTransport):
    def __init__(self, log: CallLog, inner: httpx.BaseTransport) -> None:
        self.log = log
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self.inner.handle_request(request)
        except httpx.HTTPError as exc:
            self.log.record(request.method, str(request.url), type(exc).__name__)
            raise
        # A DELETE is not retried by the client and its error does not carry the header,
        # yet the next attempt must wait: keep a 429/503's Retry-After with the call.
        wait = retry_after(response) if response.status_code in (429, 503) else None
        self.log.record(request.method, str(request.url), response.status_code, wait)
        return response

    def close(self) -> None:
        self.inner.close()


def make_registry_client(config: Config, calls: CallLog, *,
                         inner: httpx.BaseTransport | None = None, url: str | None = None,
                         username: str | None = None,
                         password: Any = None) -> RegistryClient:
    """The production client: credentials from the config, every call recorded in ``calls``.

    ``url`` (with ``username``/``password``) names another registry, such as the backup one."""
    if url is None:
        url = config["registry.url"]
        username, password = config["registry.username"], config["registry.password"]
    if not url:
        from .errors import ConfigError

        raise ConfigError("registry.url is not set: the executor needs a registry",
                          setting="registry.url")
    auth = RegistryAuth(username, password.reveal() if password else None)
    transport = calls.transport(inner or httpx.HTTPTransport(verify=config["registry.verify_tls"]))
    return RegistryClient(url, auth=auth, transport=transport,
                          timeout=config["registry.timeout"].total_seconds(),
                          verify=config["registry.verify_tls"])


def gc_command(config: Config) -> str:
    """The exact garbage-collect command to run after deletions (space returns only then)."""
    path = config["registry.gc_config"] or "<registry config.yml (set registry.gc_config)>"
    return f"docker-registry garbage-collect {path}"


def guardrails(conn: Connection, config: Config, *, now: datetime,
               candidates: list[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """The recommender's guardrails for ``candidates`` as of ``now`` (empty list: none keeps it).

    "not alive" means the store does not know the manifest as present; whether it exists is
    the registry's to say (step 2), so that reason is not a guardrail here.
    """
    if not candidates:
        return {}
    from . import policy

    found = policy.evaluate(conn, config, now=now, candidates=candidates)
    return {key: [r for r in found.get(key, []) if not r.startswith("not alive")]
            for key in candidates}


@dataclass(frozen=True)
class DueItem:
    id: int
    batch_id: str
    repository: str
    digest: str
    tags: tuple[str, ...]
    suggested_at: datetime
    attempts: int
    reclaimable_bytes: int
    state: str
    subject: str | None = None  # set for signatures, attestations, SBOMs, OCI referrers
    parents: tuple[str, ...] = ()  # indexes that list this manifest as a platform child

    @property
    def dependent(self) -> bool:
        return bool(self.subject or self.parents)


@dataclass
class ItemOutcome:
    """What happened to one item. ``outcome``: deleted, skipped, retry, failed, would_delete,
    would_skip or lost (another worker took the lease)."""

    item_id: int
    batch_id: str
    repository: str
    digest: str
    tags: tuple[str, ...]
    outcome: str
    reason: str = ""
    attempts: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "batch_id": self.batch_id,
                "repository": self.repository, "digest": self.digest, "tags": list(self.tags),
                "outcome": self.outcome, "reason": self.reason, "attempts": self.attempts}


@dataclass
class ExecutionReport:
    now: datetime
    dry_run: bool
    outcomes: list[ItemOutcome] = field(default_factory=list)
    reclaimable_bytes: int = 0
    gc_command: str = ""
    finished_batches: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    @property
    def deleted(self) -> list[ItemOutcome]:
        return [o for o in self.outcomes if o.outcome in ("deleted", "would_delete")]

    def as_dict(self) -> dict[str, Any]:
        return {"now": self.now.isoformat(), "dry_run": self.dry_run,
                "counts": {k: self.count(k) for k in sorted({o.outcome for o in self.outcomes})},
                "reclaimable_bytes": self.reclaimable_bytes, "gc_command": self.gc_command,
                "finished_batches": self.finished_batches,
                "items": [o.as_dict() for o in self.outcomes]}


@dataclass(frozen=True)
class _RepoView:
    """The registry's tags of one repository: tag -> digest, platform -> [(index, tag)]."""

    tags: dict[str, str | None]
    parents: dict[str, list[tuple[str, str]]]


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Executor:
    """``Executor(store, client, config).run_due(now)``; ``dry_run`` changes nothing.

    ``registry_client`` defaults to :func:`make_registry_client` (audited calls); a caller
    passing its own client passes the :class:`CallLog` whose transport it uses as ``calls``.
    """

    def __init__(self, store: Store, registry_client: RegistryClient | None, config: Config, *,
                 dry_run: bool = False, calls: CallLog | None = None,
                 worker_id: str | None = None, workers: int | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 backup_client: RegistryClient | None = None) -> None:
        self.store = store
        self.config = config
        self.dry_run = dry_run
        self.calls = calls or CallLog()
        self.client = registry_client or make_registry_client(config, self.calls)
        self.worker_id = worker_id or f"executor-{secrets.token_hex(4)}"
        self.workers = max(1, workers or config["executor.workers"])
        self.audit = AuditLog(store)
        backup_dir = config["executor.backup_dir"]
        self.backup_dir = Path(backup_dir) if backup_dir else None
        self.backup_client = backup_client
        self._gone: set[tuple[str, str]] = set()  # deleted (or would be) in this run
        # What the registry's tags name, per repository, read once per run (_registry_view)
        self._tags_now: dict[str, _RepoView] = {}
        self._tags_locks: dict[str, threading.Lock] = {}
        self._tags_guard = threading.Lock()
        self._monotonic = monotonic
        self.lease_chunk = LEASE_CHUNK

    # -- hooks ---------------------------------------------------------------------------------

    def after_delete(self, item: DueItem) -> None:
        """Runs after a successful DELETE, before its result is recorded (tests crash here)."""

    # -- the run ---------------------------------------------------------------------------------

    def run_due(self, now: datetime) -> ExecutionReport:
        """Run every item due at ``now``; the report says what happened to each."""
        if self.backup_client is not None or not self.config["executor.backup_registry"]:
            return self._run(now)
        # A backup registry client of our own lives for one run (no sockets left behind).
        self.backup_client = make_registry_client(
            self.config, self.calls, url=self.config["executor.backup_registry"],
            username=self.config["executor.backup_registry_username"],
            password=self.config["executor.backup_registry_password"])
        try:
            return self._run(now)
        finally:
            self.backup_client.close()
            self.backup_client = None

    def _run(self, now: datetime) -> ExecutionReport:
        report = ExecutionReport(now=now, dry_run=self.dry_run, gc_command=gc_command(self.config))
        with self.store.connect() as conn:
            due = self._due(conn, now)
            kept = guardrails(conn, self.config, now=now,
                              candidates=sorted({(i.repository, i.digest) for i in due}))
        self._gone = set()
        self._tags_now, self._tags_locks = {}, {}
        started = self._monotonic()
        # Referrers and platform children after everything else: a signature goes only once
        # its subject is gone, a child only once its index is gone, so a kept subject keeps
        # its signatures (deploy-time verification) and a kept index keeps its platforms.
        with ThreadPoolExecutor(max_workers=self.workers,
                                thread_name_prefix="tagwarden-exec") as pool:
            for phase in ([i for i in due if not i.dependent], [i for i in due if i.dependent]):
                outcomes: list[ItemOutcome] = []
                # Lease a chunk at a time, so a long run never holds leases that expire before
                # their items are reached (another replica would then take them too).
                for start in range(0, len(phase), self.lease_chunk):
                    chunk = phase[start:start + self.lease_chunk]
                    if not self.dry_run:
                        elapsed = timedelta(seconds=self._monotonic() - started)
                        chunk = self._lease(chunk, now, elapsed)
                    outcomes.extend(pool.map(
                        lambda item: self._one(item, now,
                                               kept.get((item.repository, item.digest), [])),
                        chunk,
                    ))
                report.outcomes.extend(outcomes)
                self._gone.update((o.repository, o.digest) for o in outcomes
                                  if o.outcome in ("deleted", "would_delete"))
        self._finish(report, now)
        return report

    def _due_clause(self, now: datetime) -> Any:
        return or_(
            and_(batch_items.c.state == ItemState.APPROVED, batch_items.c.due_at <= now,
                 or_(batch_items.c.next_attempt_at.is_(None),
                     batch_items.c.next_attempt_at <= now)),
            and_(batch_items.c.state == ItemState.EXECUTING,
                 batch_items.c.lease_expires <= now),
        )

    def _due(self, conn: Connection, now: datetime) -> list[DueItem]:
        approved_enough = (select(func.count()).select_from(approvals)
                           .where(approvals.c.batch_id == batches.c.id)
                           .scalar_subquery() >= batches.c.min_approvals)
        # An item left "executing" by a crashed worker is finished whatever its batch became
        # since (a cancel does not touch started items): its DELETE may already have happened.
        query = (select(batch_items, manifests.c.subject.label("manifest_subject"))
                 .join(batches, batches.c.id == batch_items.c.batch_id)
                 .outerjoin(manifests, and_(manifests.c.repository == batch_items.c.repository,
                                            manifests.c.digest == batch_items.c.digest))
                 .where(or_(batches.c.state == BatchState.APPROVED,
                            batch_items.c.state == ItemState.EXECUTING))
                 .where(self._due_clause(now))
                 # Defence in depth for invariant 1 (docs/design.md): whatever wrote the
                 # state, never act on a batch without its recorded approvals.
                 .where(approved_enough)
                 .order_by(batch_items.c.due_at, batch_items.c.id))
        rows = conn.execute(query).all()
        parents: dict[tuple[str, str], list[str]] = {}
        digests = sorted({r.digest for r in rows})
        for start in range(0, len(digests), 500):
            for repo, parent, child in conn.execute(
                    select(manifest_children.c.repository, manifest_children.c.parent,
                           manifest_children.c.child)
                    .where(manifest_children.c.child.in_(digests[start:start + 500]))):
                parents.setdefault((repo, child), []).append(parent)
        return [DueItem(int(r.id), r.batch_id, r.repository, r.digest, tuple(r.tags or ()),
                        r.suggested_at, int(r.attempts or 0), int(r.reclaimable_bytes or 0),
                        r.state, _subject(r.manifest_subject, r.tags or ()),
                        tuple(sorted(parents.get((r.repository, r.digest), []))))
                for r in rows]

    def _lease(self, due: list[DueItem], now: datetime,
               elapsed: timedelta = timedelta(0)) -> list[DueItem]:
        """Take the items atomically; items another worker took meanwhile are left out.

        ``now`` is the run's (injected) time; ``elapsed`` the real time the run has taken so
        far, so the lease lasts ``executor.lease`` from the moment it is taken."""
        taken: dict[int, int] = {}
        expires = now + elapsed + self.config["executor.lease"]
        for start in range(0, len(due), 500):
            chunk = [i.id for i in due[start:start + 500]]
            with self.store.begin() as conn:
                rows = conn.execute(
                    update(batch_items).where(batch_items.c.id.in_(chunk))
                    .where(self._due_clause(now + elapsed))
                    .values(state=ItemState.EXECUTING, lease_owner=self.worker_id,
                            lease_expires=expires, attempts=batch_items.c.attempts + 1)
                    .returning(batch_items.c.id, batch_items.c.attempts)
                ).all()
                taken.update({int(r.id): int(r.attempts) for r in rows})
                if rows:
                    self.audit.append("execute.leased", self.worker_id, {
                        "items": sorted(taken_id for taken_id in (int(r.id) for r in rows)),
                        "lease_expires": expires,
                    }, now=now, conn=conn)
        return [replace(i, attempts=taken[i.id], state=ItemState.EXECUTING) for i in due
                if i.id in taken]

    def _outcome(self, item: DueItem, outcome: str, reason: str = "") -> ItemOutcome:
        return ItemOutcome(item.id, item.batch_id, item.repository, item.digest, item.tags,
                           outcome, reason, item.attempts, self.calls.drain())

    def _one(self, item: DueItem, now: datetime, kept: list[str]) -> ItemOutcome:
        self.calls.drain()
        try:
            checks = self._recheck(item, now, kept)
        except _Skip as skip:
            return self._record(item, now, "would_skip" if self.dry_run else "skipped",
                                skip.reason)
        except RegistryError as exc:
            return self._failure(item, now, f"re-check: {exc.message}", exc.temporary)
        if checks == "gone":
            return self._record(item, now, "would_delete" if self.dry_run else "deleted",
                                "already gone")
        if self.dry_run:
            return self._record(item, now, "would_delete", checks)
        # "executing" is already committed (the lease); commit the re-check and its calls too,
        # so a crash after the DELETE leaves a trail that the retry completes.
        with self.store.begin() as conn:
            if not self._still_ours(conn, item):
                lost = self._outcome(item, "lost", "lease taken by another worker")
                self._audit_lost(conn, lost, now, intended="delete")
                return lost
            batch = conn.execute(select(batches.c.state, batches.c.decided_by)
                                 .where(batches.c.id == item.batch_id)).one()
            if batch.state == BatchState.CANCELLED:
                cancelled_by = batch.decided_by
            else:
                cancelled_by = None
                self.audit.append("item.checked", ACTOR, {
                    "item_id": item.id, "batch_id": item.batch_id,
                    "repository": item.repository, "digest": item.digest, "checks": checks,
                    "calls": self.calls.drain(),
                }, now=now, conn=conn)
        if cancelled_by is not None:
            # A Cancel committed after the lease but before this point still stops the
            # DELETE (the cancel leaves leased items alone: one may be mid-DELETE). One
            # committed later is reported by the cancel as "already started".
            return self._record(item, now, "skipped",
                                f"cancelled by {cancelled_by} before its delete")
        if self.backup_dir is not None or self.backup_client is not None:
            from .backup import backup_manifest, copy_manifest

            try:
                if self.backup_dir is not None:
                    backup_manifest(self.client, item.repository, item.digest, item.tags,
                                    self.backup_dir, now=now)
                if self.backup_client is not None:
                    copy_manifest(self.client, self.backup_client, item.repository,
                                  item.digest, item.tags)
            except NotFound:
                return self._record(item, now, "deleted", "already gone")
            except RegistryError as exc:
                return self._failure(item, now, f"backup: {exc.message}", exc.temporary)
            except (OSError, TagwardenError) as exc:
                # No backup, no delete: a full disk must not turn into an unrecoverable loss.
                return self._failure(item, now, f"backup: {exc}", True)
        try:
            self.client.delete_manifest(item.repository, item.digest)
            reason = "deleted by digest"
        except NotFound:
            reason = "already gone"
        except RegistryError as exc:
            return self._failure(item, now, f"delete: {exc.message}", exc.temporary)
        self.after_delete(item)
        return self._record(item, now, "deleted", reason)

    def _audit_lost(self, conn: Connection, lost: ItemOutcome, now: datetime, *,
                    intended: str) -> None:
        self.audit.append("item.lost", self.worker_id, {
            "item_id": lost.item_id, "batch_id": lost.batch_id, "repository": lost.repository,
            "digest": lost.digest, "intended": intended, "calls": lost.calls,
        }, now=now, conn=conn)

    def _still_ours(self, conn: Connection, item: DueItem) -> bool:
        # Taking the row (a no-op UPDATE) both checks and locks the lease for this transaction.
        done = conn.execute(update(batch_items).where(batch_items.c.id == item.id)
                            .where(batch_items.c.state == ItemState.EXECUTING)
                            .where(batch_items.c.lease_owner == self.worker_id)
                            .values(lease_owner=self.worker_id))
        return done.rowcount == 1

    def _recheck(self, item: DueItem, now: datetime, kept: list[str]) -> str:
        """Raise :class:`_Skip` with the reason, or return "gone" or a summary of the checks."""
        key = (item.repository, item.digest)
        with self.store.connect() as conn:
            family = [item.digest, *conn.execute(
                select(manifest_children.c.child)
                .where(manifest_children.c.repository == item.repository)
                .where(manifest_children.c.parent == item.digest)).scalars()]
            # A use naming only one of its tags, which the writer could not resolve (digest
            # ""), is a use of this digest too: the tag was on it when it was suggested.
            by_tag: Any = (and_(rollups.c.digest == "", rollups.c.tag.in_(list(item.tags)))
                           if item.tags else false())
            used = conn.execute(
                select(rollups.c.digest, rollups.c.tag, rollups.c.action,
                       func.max(rollups.c.last_at))
                .where(rollups.c.repository == item.repository)
                .where(or_(rollups.c.digest.in_(family), by_tag))
                .where(rollups.c.usage == "use")
                .where(rollups.c.last_at > item.suggested_at)
                .group_by(rollups.c.digest, rollups.c.tag, rollups.c.action)
                .order_by(rollups.c.digest.desc())).first()
            if used is not None:
                raise _Skip(f"used since the suggestion: {used[2]} of {used[0] or used[1]} at "
                            f"{used[3].isoformat()}")
            pod = self._running(conn, item, family, now)
            if pod is not None:
                raise _Skip(f"runs now: {pod}")
            added = conn.execute(
                select(tag_history.c.tag).where(tag_history.c.repository == item.repository)
                .where(tag_history.c.digest == item.digest)
                .where(tag_history.c.valid_to.is_(None))
                .where(tag_history.c.valid_from > item.suggested_at)
                .where(tag_history.c.tag.not_in(list(item.tags) or [""]))).scalars().first()
            if added is not None:
                raise _Skip(f"tagged since the suggestion: {added}")
        if kept:
            raise _Skip("guardrail: " + "; ".join(kept))
        del key
        if self.client.head_manifest(item.repository, item.digest) is None:
            return "gone"
        if item.subject and (item.repository, item.subject) not in self._gone and \
                self.client.head_manifest(item.repository, item.subject) is not None:
            raise _Skip(f"its subject {item.subject} is kept (referrers go only with it)")
        for parent in item.parents:
            if (item.repository, parent) not in self._gone and \
                    self.client.head_manifest(item.repository, parent) is not None:
                raise _Skip(f"a platform of index {parent}, which is kept")
        for tag in item.tags:
            try:
                now_at = self.client.resolve(item.repository, tag)
            except NotFound:
                continue  # the tag was removed: nothing left to protect
            if now_at != item.digest:
                raise _Skip(f"tag moved: {tag} now points to {now_at}")
        # A tag put on the digest after the suggestion whose notification was lost is known
        # only to the registry; deleting the digest would delete that tag too (an alias, a
        # promotion to "prod").
        view = self._registry_view(item.repository)
        for tag, at in sorted(view.tags.items()):
            if at == item.digest and tag not in item.tags:
                raise _Skip(f"tagged since the suggestion: {tag} (found in the registry)")
        # Likewise a tagged index that lists the digest as a platform (a multi-arch release
        # reusing the image) and that the scan has not seen: the store's parents miss it.
        for parent, tag in view.parents.get(item.digest, ()):
            if (item.repository, parent) not in self._gone:
                raise _Skip(f"a platform of index {parent} (tag {tag}), which is kept")
        return f"{len(item.tags)} tag(s) still on the digest; not used, not running"

    def _registry_view(self, repository: str) -> _RepoView:
        """Every tag of ``repository`` with the digest it names, and the platforms of every
        tagged index, read once per run (one ``HEAD`` per tag, full ``Accept`` list; a
        ``GET`` of each tagged manifest the store does not know as a plain image). A tag
        moved during the run onto a digest being deleted is the remaining window; the tags an
        item was shown are re-resolved right before its own delete."""
        with self._tags_guard:
            lock = self._tags_locks.setdefault(repository, threading.Lock())
        with lock:
            found = self._tags_now.get(repository)
            if found is not None:
                return found
            try:
                names = self.client.list_tags(repository)
            except NotFound:
                names = []
            tags = {tag: self.client.head_manifest(repository, tag) for tag in names}
            digests = sorted({d for d in tags.values() if d})
            plain: set[str] = set()
            with self.store.connect() as conn:
                for start in range(0, len(digests), 500):
                    plain.update(conn.execute(
                        select(manifests.c.digest)
                        .where(manifests.c.repository == repository)
                        .where(manifests.c.digest.in_(digests[start:start + 500]))
                        .where(manifests.c.is_index.is_(False))).scalars())
            parents: dict[str, list[tuple[str, str]]] = {}
            for digest in digests:
                if digest in plain:
                    continue
                try:
                    manifest = self.client.get_manifest(repository, digest)
                except NotFound:
                    continue
                children = manifest.parsed.get("manifests")
                if not isinstance(children, list):
                    continue
                tag = min(t for t, d in tags.items() if d == digest)
                for child in children:
                    if isinstance(child, dict) and isinstance(child.get("digest"), str):
                        parents.setdefault(child["digest"], []).append((digest, tag))
            found = _RepoView(tags, parents)
            self._tags_now[repository] = found
            return found

    def _running(self, conn: Connection, item: DueItem, family: list[str],
                 now: datetime) -> str | None:
        """A pod of the latest snapshot (per source, at or before now) running the item."""
        latest = (select(k8s_snapshots.c.source, func.max(k8s_snapshots.c.taken_at).label("t"))
                  .where(k8s_snapshots.c.taken_at <= now).group_by(k8s_snapshots.c.source)
                  .subquery())
        snaps = (select(k8s_snapshots.c.id)
                 .join(latest, and_(latest.c.source == k8s_snapshots.c.source,
                                    latest.c.t == k8s_snapshots.c.taken_at)))
        by_ref: Any = running_refs.c.digest.in_(family)
        if item.tags:
            by_ref = or_(by_ref, and_(running_refs.c.digest.is_(None),
                                      running_refs.c.tag.in_(list(item.tags))))
        row = conn.execute(
            select(running_refs.c.namespace, running_refs.c.pod, running_refs.c.image)
            .where(running_refs.c.snapshot_id.in_(snaps))
            .where(running_refs.c.repository == item.repository).where(by_ref).limit(1)).first()
        if row is None:
            return None
        return f"{row.namespace}/{row.pod} ({row.image})"

    def _failure(self, item: DueItem, now: datetime, reason: str,
                 temporary: bool) -> ItemOutcome:
        """Retry later (the item stays approved) or, when hopeless, mark it failed."""
        if self.dry_run or (temporary and item.attempts < self.config["executor.max_attempts"]):
            return self._record(item, now, "retry", reason)
        return self._record(item, now, "failed", reason)

    def _record(self, item: DueItem, now: datetime, outcome: str, reason: str) -> ItemOutcome:
        result = self._outcome(item, outcome, reason)
        if self.dry_run:
            return result
        values: dict[str, Any] = {"lease_owner": None, "lease_expires": None}
        if outcome == "retry":
            base: timedelta = self.config["executor.retry_backoff"]
            wait = min(base * (2 ** max(0, item.attempts - 1)),
                       self.config["executor.retry_backoff_max"])
            # The registry's own Retry-After wins over a shorter backoff (capped at a day).
            asked = max((c.get("retry_after") or 0.0 for c in result.calls), default=0.0)
            wait = max(wait, timedelta(seconds=min(asked, 86400.0)))
            values.update(state=ItemState.APPROVED, next_attempt_at=now + wait, result=reason)
        elif outcome == "skipped":
            values.update(state=ItemState.SKIPPED, skipped_reason=reason, finished_at=now,
                          result=reason)
        else:
            values.update(state=ItemState(outcome), finished_at=now, result=reason)
            if outcome == "deleted":
                values["deleted_bytes"] = item.reclaimable_bytes
        with self.store.begin() as conn:
            done = conn.execute(update(batch_items).where(batch_items.c.id == item.id)
                                .where(batch_items.c.state == ItemState.EXECUTING)
                                .where(batch_items.c.lease_owner == self.worker_id)
                                .values(**values))
            if done.rowcount != 1:
                result.outcome, result.reason = "lost", "lease taken by another worker"
                # What this worker did (maybe a DELETE) is still audited; the item's record
                # is the other worker's.
                self._audit_lost(conn, result, now, intended=outcome)
                return result
            if outcome == "deleted":
                conn.execute(update(manifests).where(manifests.c.repository == item.repository)
                             .where(manifests.c.digest == item.digest)
                             .where(manifests.c.deleted_at.is_(None)).values(deleted_at=now))
            self.audit.append(f"item.{outcome}", ACTOR, {
                "item_id": item.id, "batch_id": item.batch_id, "repository": item.repository,
                "digest": item.digest, "tags": list(item.tags), "reason": reason,
                "attempt": item.attempts, "calls": result.calls,
                **({"next_attempt_at": values["next_attempt_at"]} if outcome == "retry" else {}),
            }, now=now, conn=conn)
        return result

    def _finish(self, report: ExecutionReport, now: datetime) -> None:
        deleted = [o for o in report.deleted]
        keys = sorted({(o.repository, o.digest) for o in deleted})
        with self.store.begin() as conn:
            report.reclaimable_bytes = _gc_bytes(conn, keys)
            if not self.dry_run:
                touched = sorted({o.batch_id for o in report.outcomes})
                open_items = (select(batch_items.c.id)
                              .where(batch_items.c.batch_id == batches.c.id)
                              .where(batch_items.c.state.in_(ACTIVE_ITEM_STATES)))
                if touched:
                    rows = conn.execute(update(batches).where(batches.c.id.in_(touched))
                                        .where(batches.c.state == BatchState.APPROVED)
                                        .where(~open_items.exists())
                                        .values(state=BatchState.DONE, updated_at=now)
                                        .returning(batches.c.id)).scalars().all()
                    report.finished_batches = sorted(rows)
            if report.outcomes:
                self.audit.append("execute.dry_run" if self.dry_run else "execute.run",
                                  self.worker_id, {
                                      k: v for k, v in report.as_dict().items() if k != "items"
                                  } | ({"items": [o.as_dict() | {"calls": o.calls}
                                                  for o in report.outcomes]}
                                       if self.dry_run else {}),
                                  now=now, conn=conn)


def _subject(manifest_subject: str | None, tags: Any) -> str | None:
    """The digest a referrer refers to: the inventory's ``subject``, else a cosign tag's."""
    if manifest_subject:
        return manifest_subject
    for tag in tags:
        found = referrer_kind(tag)
        if found is not None:
            return found[0]
    return None


def _gc_bytes(conn: Connection, keys: list[tuple[str, str]]) -> int:
    """Layer-deduplicated bytes the deletions make eligible for garbage collection."""
    if not keys:
        return 0
    from .inventory import reclaimable_bytes

    return int(reclaimable_bytes(conn, keys))
