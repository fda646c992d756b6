"""The executor's items: one due for deletion, what happened to it, the report of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["DueItem", "ExecutionReport", "ItemOutcome", "Skip"]


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
    reclaim: str = ""  # the registry's Reclaim kind: how the space comes back
    reclaim_note: str = ""
    gc_command: str = ""  # the step to run for it, when there is one
    finished_batches: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    @property
    def deleted(self) -> list[ItemOutcome]:
        return [o for o in self.outcomes if o.outcome in ("deleted", "would_delete")]

    def as_dict(self) -> dict[str, Any]:
        return {"now": self.now.isoformat(), "dry_run": self.dry_run,
                "counts": {k: self.count(k) for k in sorted({o.outcome for o in self.outcomes})},
                "reclaimable_bytes": self.reclaimable_bytes, "reclaim": self.reclaim,
                "reclaim_note": self.reclaim_note, "gc_command": self.gc_command,
                "finished_batches": self.finished_batches,
                "items": [o.as_dict() for o in self.outcomes]}


class Skip(Exception):
    """Raised by a re-check: the item must stay, for ``reason`` (recorded as skipped)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
