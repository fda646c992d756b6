"""Declared references in the store: replaced per source, answered as of any instant.

A source (a checkout, a GitOps repository, a Docker host, a CI pipeline) sends its whole set
each time. :func:`replace_source` compares it with the source's open rows in one transaction:
rows no longer present are closed (``valid_to = at``), new ones opened, unchanged ones left
alone -- so a removed line stops protecting at once, and a backtest can still ask what was
declared last month.

:func:`declared_references` is what the guardrails read: a reference by digest protects that
digest; a reference by tag (no tag means ``latest``) protects the digest the tag pointed to at
``at``, from ``tag_history``. References to registries we do not manage protect nothing here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, false, func, or_, select, text, union_all, update

from ..errors import PayloadError
from ..reference import managed_repository
from ..store import Store
from ..store.tables import declared_refs, tag_history
from .found import DeclaredRef

__all__ = [
    "ReplaceResult",
    "current_references",
    "declared_references",
    "record",
    "replace_source",
]

_SOURCE_MAX, _LOCATION_MAX, _DETAIL_MAX = 255, 1024, 512
_CHUNK = 500  # ids per UPDATE ... IN (...), under every driver's parameter limit


@dataclass(frozen=True, slots=True)
class ReplaceResult:
    source: str
    added: int
    removed: int
    unchanged: int

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "unchanged": self.unchanged}


def _row(ref: DeclaredRef, source: str, hosts: Collection[str], at: datetime) -> dict[str, Any]:
    r = ref.ref
    return {
        "source": source,
        "location": ref.location,
        "kind": ref.kind,
        "detail": ref.detail[:_DETAIL_MAX],
        "image": ref.image,
        "registry": r.registry,
        "path": r.repository,
        "repository": managed_repository(r, hosts),
        # what a pull by this reference fetches: the digest when pinned, else the tag
        "tag": r.tag or (None if r.digest else "latest"),
        "digest": r.digest,
        "valid_from": at,
        "valid_to": None,
    }


def _key(row: Any) -> tuple[Any, ...]:
    return (row["location"], row["kind"], row["detail"], row["image"], row["repository"])


def _check_source(source: str) -> None:
    if not source or not source.strip():
        raise PayloadError("a reference source must not be empty", where="source")
    if len(source) > _SOURCE_MAX:
        raise PayloadError(f"source longer than {_SOURCE_MAX} characters", where="source")


def replace_source(
    conn: Connection,
    source: str,
    refs: Iterable[DeclaredRef],
    *,
    at: datetime,
    hosts: Collection[str] = (),
) -> ReplaceResult:
    """Make ``refs`` the set of ``source`` from ``at`` on (inside the caller's transaction)."""
    _check_source(source)
    new: dict[tuple[Any, ...], dict[str, Any]] = {}
    for ref in refs:
        if len(ref.location) > _LOCATION_MAX:
            raise PayloadError(f"location longer than {_LOCATION_MAX} characters",
                               where="location", location=ref.location[:80])
        row = _row(ref, source, hosts, at)
        new.setdefault(_key(row), row)
    # Two writers replacing one source at once would both read the old set and both insert
    # the new rows: serialize them before reading.
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": source})
    else:
        # SQLite's driver begins the transaction at the first write, so reads before it see
        # no lock; a write that changes nothing takes the database's write lock now.
        conn.execute(update(declared_refs).where(false()).values(valid_to=None))
    latest = conn.execute(
        select(func.max(declared_refs.c.valid_from), func.max(declared_refs.c.valid_to))
        .where(declared_refs.c.source == source)
    ).one()
    last_change = max((t for t in latest if t is not None), default=None)
    if last_change is not None and last_change > at:
        raise PayloadError(
            f"references of {source!r} were already recorded at {last_change.isoformat()}, "
            f"later than {at.isoformat()}",
            where="at", source=source,
        )
    open_rows = conn.execute(
        select(declared_refs.c.id, declared_refs.c.location, declared_refs.c.kind,
               declared_refs.c.detail, declared_refs.c.image, declared_refs.c.repository)
        .where(declared_refs.c.source == source, declared_refs.c.valid_to.is_(None))
    ).mappings().all()
    seen: set[tuple[Any, ...]] = set()
    to_close: list[int] = []
    gone = 0
    for open_row in open_rows:
        key = _key(open_row)
        if key not in new:
            gone += 1
            to_close.append(open_row["id"])
        elif key in seen:  # a duplicate left by an earlier concurrent writer
            to_close.append(open_row["id"])
        else:
            seen.add(key)
    for start in range(0, len(to_close), _CHUNK):
        conn.execute(
            update(declared_refs)
            .where(declared_refs.c.id.in_(to_close[start : start + _CHUNK]))
            .values(valid_to=at)
        )
    added = [row for key, row in new.items() if key not in seen]
    if added:
        conn.execute(declared_refs.insert(), added)
    return ReplaceResult(source, added=len(added), removed=gone, unchanged=len(seen))


def record(
    store: Store,
    sets: Mapping[str, Sequence[DeclaredRef]],
    *,
    at: datetime,
    hosts: Collection[str] = (),
) -> list[ReplaceResult]:
    """Replace several sources' sets in one transaction: all of them or none."""
    with store.begin() as conn:
        return [replace_source(conn, source, refs, at=at, hosts=hosts)
                for source, refs in sets.items()]


def _live(at: datetime) -> Any:
    d = declared_refs.c
    return and_(d.valid_from <= at, or_(d.valid_to.is_(None), d.valid_to > at),
                d.repository.is_not(None))


def declared_references(
    conn: Connection, *, at: datetime, with_source: bool = False
) -> dict[tuple[str, str], list[str]]:
    """``{(repository, digest): [location, ...]}`` of every reference declared at ``at``.

    ``with_source`` names the source too (``"gitops: deploy/cron.yaml:14"``), for listings
    where several checkouts may hold the same relative path.
    """
    d, th = declared_refs.c, tag_history.c
    by_digest = select(d.repository, d.digest, d.location, d.source).where(
        _live(at), d.digest.is_not(None)
    )
    by_tag = (
        select(d.repository, th.digest, d.location, d.source)
        .select_from(declared_refs.join(
            tag_history, and_(tag_history.c.repository == d.repository, th.tag == d.tag)))
        .where(_live(at), d.digest.is_(None), th.valid_from <= at,
               or_(th.valid_to.is_(None), th.valid_to > at))
    )
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for repository, digest, location, source in conn.execute(union_all(by_digest, by_tag)):
        found[(repository, digest)].add(f"{source}: {location}" if with_source else location)
    return {key: sorted(locations) for key, locations in found.items()}


def current_references(
    conn: Connection, *, at: datetime, source: str | None = None
) -> list[dict[str, Any]]:
    """Every reference declared at ``at`` (managed or not), for listings and ``why``."""
    d = declared_refs.c
    query = (
        select(d.source, d.location, d.kind, d.detail, d.image, d.repository, d.tag, d.digest,
               d.valid_from)
        .where(d.valid_from <= at, or_(d.valid_to.is_(None), d.valid_to > at))
        .order_by(d.source, d.location, d.image)
    )
    if source is not None:
        query = query.where(d.source == source)
    return [dict(row) for row in conn.execute(query).mappings()]
