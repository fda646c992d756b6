"""What every parser produces and the writer stores: normalised events and pod snapshots.

These records mirror the ``events``, ``k8s_snapshots`` and ``running_refs`` tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any

__all__ = ["ACTIONS", "USAGE_CLASSES", "Event", "PodSnapshot", "RunningRef", "WriteResult",
           "event_fields"]

ACTIONS = ("push", "pull", "delete", "mount", "deploy")
USAGE_CLASSES = ("use", "scanner", "replication", "janitor", "self", "blob", "failed")


@dataclass(slots=True)
class Event:
    time: datetime
    source: str  # distribution | harbor | cloudtrail | deploy
    source_event_id: str  # the source's id, or a content hash when it has none
    action: str  # one of ACTIONS
    usage: str  # one of USAGE_CLASSES
    repository: str
    registry: str | None = None
    digest: str | None = None
    tag: str | None = None
    media_type: str | None = None
    size: int | None = None
    method: str | None = None
    user_agent: str | None = None
    actor: str | None = None
    client_addr: str | None = None
    environment: str | None = None
    cluster: str | None = None
    namespace: str | None = None
    # ``time`` as SQLite stores it (``bulk.sqlite_time``), when the parser had it at hand (a
    # Distribution timestamp in the usual form): formatting a time again costs as much as
    # parsing it. Not part of the event: equality ignores it.
    stamp: str | None = field(default=None, compare=False, repr=False)

    def row(self) -> dict[str, Any]:
        return asdict(self)


# An event as the tuple of its fields, in order; ``Event(*fields)`` rebuilds it. What crosses
# a pipe to another process: pickling a tuple costs a fraction of pickling a dataclass.
event_fields = attrgetter(*(f.name for f in fields(Event)))


@dataclass(slots=True)
class RunningRef:
    registry: str
    repository: str
    image: str  # as reported by the runtime or the spec
    digest: str | None = None
    tag: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None
    container_kind: str = "container"  # container | init | ephemeral


@dataclass(slots=True)
class PodSnapshot:
    """One pod list from one source (a cluster): it replaces that source's running set."""

    source: str
    taken_at: datetime
    pods: int
    refs: list[RunningRef] = field(default_factory=list)


@dataclass(slots=True)
class WriteResult:
    """What a write did. ``conflicting``: the positions, in the batch written, of duplicates
    whose id was stored with other content (a sender reusing ids, not retrying); they count
    among ``duplicates`` too. Only :meth:`EventWriter.write` looks for them."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    conflicting: list[int] = field(default_factory=list)

    def __iadd__(self, other: WriteResult) -> WriteResult:
        self.conflicting += [self.received + i for i in other.conflicting]
        self.received += other.received
        self.stored += other.stored
        self.duplicates += other.duplicates
        return self
