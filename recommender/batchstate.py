"""The states of batches and their items, and the records read back from the store.

Members of the state enums are ``str``, so they compare equal to, and are stored as, the
plain strings in the ``state`` columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

__all__ = [
    "ACTIVE_ITEM_STATES",
    "FINISHED_ITEM_STATES",
    "BatchRecord",
    "BatchState",
    "ItemRecord",
    "ItemState",
    "SuggestionLike",
]


class BatchState(StrEnum):
    """A batch's ``state`` column: pending -> approved | denied | snoozed | cancelled;
    approved -> done (all items finished) or cancelled. Members are ``str``, so the stored
    values are these strings."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    SNOOZED = "snoozed"
    CANCELLED = "cancelled"
    DONE = "done"


class ItemState(StrEnum):
    """A batch item's ``state`` column: suggested -> approved -> executing -> deleted |
    skipped | failed; or dropped (left out of an approval), denied, snoozed, cancelled (with
    its batch)."""

    SUGGESTED = "suggested"
    APPROVED = "approved"
    EXECUTING = "executing"
    DELETED = "deleted"
    SKIPPED = "skipped"
    FAILED = "failed"
    DROPPED = "dropped"
    DENIED = "denied"
    SNOOZED = "snoozed"
    CANCELLED = "cancelled"


# Items in these states are "pending": never proposed a second time.
ACTIVE_ITEM_STATES = (ItemState.SUGGESTED, ItemState.APPROVED, ItemState.EXECUTING)
FINISHED_ITEM_STATES = (ItemState.DELETED, ItemState.SKIPPED, ItemState.FAILED)


class SuggestionLike(Protocol):
    """What :func:`record_batches` reads from the recommender's ``Suggestion`` (and its
    ``members`` when it has them)."""

    repository: str
    digest: str
    tags: Sequence[str]
    score: float
    suggested: bool
    reclaimable_bytes: int
    reasons: Sequence[str]
    blocked_by: Sequence[str]
    batch: str
    kind: str


@dataclass(frozen=True)
class ItemRecord:
    id: int
    batch_id: str
    repository: str
    digest: str
    tags: tuple[str, ...]
    score: float | None
    reclaimable_bytes: int
    reasons: tuple[str, ...]
    suggested_at: datetime
    state: ItemState
    due_at: datetime | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    result: str | None = None
    skipped_reason: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class BatchRecord:
    id: str
    batch_key: str
    team: str
    channel: str | None
    repository: str
    kind: str
    state: BatchState
    created_at: datetime
    min_approvals: int
    cool_off: timedelta
    due_at: datetime | None = None
    posted_channel: str | None = None
    posted_ts: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    snoozed_until: datetime | None = None
    approvals: tuple[str, ...] = ()
    items: tuple[ItemRecord, ...] = field(default=())

    @property
    def reclaimable_bytes(self) -> int:
        """Sum of the items' own estimates (not layer-deduplicated across items)."""
        return sum(i.reclaimable_bytes for i in self.items if i.state != ItemState.DROPPED)

    def count(self, *states: str) -> int:
        return sum(1 for i in self.items if i.state in states)
