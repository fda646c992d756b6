"""The lease: which items are due, and taking them so that no two workers run the same one.

An item is leased (owner + expiry, one atomic UPDATE) before anything happens to it; a crashed
worker's item is taken again once its lease has expired.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from ..audit import AuditLog
from ..config import Config
from ..decisions import BatchState, ItemState
from ..registry import referrer_kind
from ..store import Store
from ..store.tables import approvals, batch_items, batches, manifest_children, manifests
from .items import DueItem

__all__ = ["LEASE_CHUNK", "Leases"]

LEASE_CHUNK = 64  # items leased at once: a few seconds of work (bench/, "Executor")


class Leases:
    """The due items of ``store`` and their leases, taken in the name of ``worker_id``."""

    def __init__(self, store: Store, config: Config, audit: AuditLog, worker_id: str) -> None:
        self.store = store
        self.config = config
        self.audit = audit
        self.worker_id = worker_id

    def due_clause(self, now: datetime) -> Any:
        return or_(
            and_(batch_items.c.state == ItemState.APPROVED, batch_items.c.due_at <= now,
                 or_(batch_items.c.next_attempt_at.is_(None),
                     batch_items.c.next_attempt_at <= now)),
            and_(batch_items.c.state == ItemState.EXECUTING,
                 batch_items.c.lease_expires <= now),
        )

    def due(self, conn: Connection, now: datetime) -> list[DueItem]:
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
                 .where(self.due_clause(now))
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

    def take(self, due: list[DueItem], now: datetime,
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
                    .where(self.due_clause(now + elapsed))
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


    def still_ours(self, conn: Connection, item: DueItem) -> bool:
        # Taking the row (a no-op UPDATE) both checks and locks the lease for this transaction.
        done = conn.execute(update(batch_items).where(batch_items.c.id == item.id)
                            .where(batch_items.c.state == ItemState.EXECUTING)
                            .where(batch_items.c.lease_owner == self.worker_id)
                            .values(lease_owner=self.worker_id))
        return done.rowcount == 1


def _subject(manifest_subject: str | None, tags: Any) -> str | None:
    """The digest a referrer refers to: the inventory's ``subject``, else a cosign tag's."""
    if manifest_subject:
        return manifest_subject
    for tag in tags:
        found = referrer_kind(tag)
        if found is not None:
            return found[0]
    return None
