"""The executor's run: lease, re-check, back up, DELETE and record each due item."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select, update

from .. import fencing, registry
from ..audit import AuditLog
from ..config import Config
from ..decisions import ACTIVE_ITEM_STATES, BatchState, ItemState
from ..errors import NotFound, RegistryError, TagwardenError
from ..registry import Registry, WritableRegistry
from ..store import Store
from ..store.tables import batch_items, batches, manifests
from .calls import CallLog
from .gc import gc_bytes
from .items import DueItem, ExecutionReport, ItemOutcome, Skip
from .lease import LEASE_CHUNK, Leases
from .recheck import Recheck, guardrails

__all__ = ["ACTOR", "Executor"]

ACTOR = "tagwarden-executor"


class Executor:
    """``Executor(store, client, config).run_due(now)``; ``dry_run`` changes nothing.

    ``registry_client`` defaults to :func:`recommender.registry.open` recording into ``calls``
    (audited calls); a caller passing its own registry passes the :class:`CallLog` it records
    into as ``calls``.
    """

    def __init__(self, store: Store, registry_client: Registry | None, config: Config, *,
                 dry_run: bool = False, calls: CallLog | None = None,
                 worker_id: str | None = None, workers: int | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 backup_client: WritableRegistry | None = None) -> None:
        self.store = store
        self.config = config
        self.dry_run = dry_run
        self.calls = calls or CallLog()
        self.client = registry_client or registry.open(config, recorder=self.calls)
        self.worker_id = worker_id or f"executor-{secrets.token_hex(4)}"
        self.workers = max(1, workers or config["executor.workers"])
        self.audit = AuditLog(store)
        backup_dir = config["executor.backup_dir"]
        self.backup_dir = Path(backup_dir) if backup_dir else None
        self.backup_client = backup_client
        self.leases = Leases(store, config, self.audit, self.worker_id)
        self._gone: set[tuple[str, str]] = set()  # deleted (or would be) in this run
        self._rechecks = Recheck(store, self.client, self._gone)
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
        self.backup_client = registry.open_writable(
            self.config, url=self.config["executor.backup_registry"],
            credentials=(self.config["executor.backup_registry_username"],
                         self.config["executor.backup_registry_password"]),
            recorder=self.calls)
        try:
            return self._run(now)
        finally:
            self.backup_client.close()
            self.backup_client = None

    def _run(self, now: datetime) -> ExecutionReport:
        hint = self.client.reclaim
        report = ExecutionReport(now=now, dry_run=self.dry_run, reclaim=hint.kind.value,
                                 reclaim_note=hint.note, gc_command=hint.command or "")
        with self.store.connect() as conn:
            due = self.leases.due(conn, now)
            kept = guardrails(conn, self.config, now=now,
                              candidates=sorted({(i.repository, i.digest) for i in due}))
        self._gone = set()
        self._rechecks = Recheck(self.store, self.client, self._gone)
        started = self._monotonic()
        one = fencing.carry(self._one)  # the scheduled job's fence, in the pool's threads
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
                        chunk = self.leases.take(chunk, now, elapsed)
                    outcomes.extend(pool.map(
                        lambda item: one(item, now, kept.get((item.repository, item.digest), [])),
                        chunk,
                    ))
                report.outcomes.extend(outcomes)
                self._gone.update((o.repository, o.digest) for o in outcomes
                                  if o.outcome in ("deleted", "would_delete"))
        with fencing.unfenced():  # closes what was recorded; a lapsed lease must not stop it
            self._finish(report, now)
        return report


    def _outcome(self, item: DueItem, outcome: str, reason: str = "") -> ItemOutcome:
        return ItemOutcome(item.id, item.batch_id, item.repository, item.digest, item.tags,
                           outcome, reason, item.attempts, self.calls.drain())

    def _one(self, item: DueItem, now: datetime, kept: list[str]) -> ItemOutcome:
        self.calls.drain()
        try:
            checks = self._recheck(item, now, kept)
        except Skip as skip:
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
            if not self.leases.still_ours(conn, item):
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
            from ..backup import backup_manifest, copy_manifest

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
            # A run that outlived its scheduler lease stops here; the item stays leased and
            # is retried once its lease expires.
            fencing.check()
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

    def _recheck(self, item: DueItem, now: datetime, kept: list[str]) -> str:
        """Raise :class:`Skip` with the reason, or return "gone" or a summary of the checks."""
        return self._rechecks.check(item, now, kept)

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
        # What happened is recorded even when the scheduler's lease lapsed meanwhile (a DELETE
        # done must be audited); the item's own lease decides whose record it is.
        with fencing.unfenced():
            return self._store_record(item, now, outcome, reason, result)

    def _store_record(self, item: DueItem, now: datetime, outcome: str, reason: str,
                      result: ItemOutcome) -> ItemOutcome:
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
            report.reclaimable_bytes = gc_bytes(conn, keys)
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
