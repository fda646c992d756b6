"""A registry's own "last pulled" figure (ECR's ``lastRecordedPullTime``) as coarse use.

ECR sends no pull notifications; without a CloudTrail trail the one sign of use it gives is the
time of an image's last recorded pull, which ECR updates at most about once a day and which
says nothing of who pulled (a scanner counts like a node). The scan stores each distinct value
as one ``pull`` event of ``use`` under its own source, so the features see it like any pull,
and the suggestions say when it is all the product knows of a repository's use.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, func, select

from ..collector.events import Event
from ..store.tables import events

__all__ = ["COARSE_NOTE", "SOURCE", "coarse_only_repositories", "last_pull_events"]

SOURCE = "registry-last-pull"
COARSE_NOTE = ("use known only from ECR's lastRecordedPullTime (updated at most daily, any "
               "puller counts; point CloudTrail at tagwarden for real pulls)")


def last_pull_events(repository: str, pulls: Iterable[tuple[str, datetime]],
                     registry: str | None = None) -> list[Event]:
    """One event per ``(digest, last pulled at)``; its id makes a later scan that sees the
    same value a duplicate, not a second use."""
    return [
        Event(time=when, source=SOURCE, source_event_id=f"{repository}@{digest}@"
              f"{when.isoformat()}"[:128], action="pull", usage="use", repository=repository,
              registry=registry, digest=digest)
        for digest, when in pulls
    ]


def coarse_only_repositories(conn: Connection) -> set[str]:
    """Repositories whose stored pulls all come from the registry's last-pull figure (none
    from notifications or CloudTrail): their suggestions carry :data:`COARSE_NOTE`."""
    e = events.c
    rows = conn.execute(
        select(e.repository).where(e.action == "pull").group_by(e.repository)
        .having(func.min(e.source) == SOURCE).having(func.max(e.source) == SOURCE))
    return {r for (r,) in rows}
