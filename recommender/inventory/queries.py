"""The inventory's read side, used by the policy, the recommender and the executor."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, tuple_

from ..refs.store import declared_references
from ..store.tables import (
    blobs,
    k8s_snapshots,
    manifest_blobs,
    manifest_children,
    manifests,
    rollups,
    running_refs,
    tag_history,
)

__all__ = ["current_tags", "list_inventory", "reclaimable_bytes", "running_digests"]

_CHUNK = 400  # keys per IN (...) query: well under SQLite's and PostgreSQL's parameter limits
Key = tuple[str, str]  # (repository, digest)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def current_tags(conn: Connection, *, at: datetime) -> dict[Key, list[str]]:
    """Which tags pointed at each (repository, digest) at ``at`` (sorted)."""
    th = tag_history.c
    found: dict[Key, list[str]] = defaultdict(list)
    for repo, tag, digest in conn.execute(
        select(th.repository, th.tag, th.digest).where(
            th.valid_from <= at, or_(th.valid_to.is_(None), th.valid_to > at))
    ):
        found[(repo, digest)].append(tag)
    return {key: sorted(set(tags)) for key, tags in found.items()}


def running_digests(
    conn: Connection, *, at: datetime, registries: Collection[str] | None = None
) -> set[Key]:
    """(repository, digest) running at ``at``: each source's newest snapshot taken at or before
    ``at``; a tag-only reference gets the digest its tag pointed at then. ``registries``
    limits to references naming those hosts."""
    snaps = k8s_snapshots.c
    latest = (
        select(snaps.source, func.max(snaps.taken_at).label("taken_at"))
        .where(snaps.taken_at <= at).group_by(snaps.source).subquery()
    )
    ids = select(snaps.id).join(latest, and_(snaps.source == latest.c.source,
                                             snaps.taken_at == latest.c.taken_at))
    rr = running_refs.c
    query = select(rr.registry, rr.repository, rr.digest, rr.tag).where(
        rr.snapshot_id.in_(ids))
    running: set[Key] = set()
    by_tag: set[tuple[str, str]] = set()
    for registry, repo, digest, tag in conn.execute(query):
        if registries is not None and registry not in registries:
            continue
        if digest:
            running.add((repo, digest))
        elif tag:
            by_tag.add((repo, tag))
    if by_tag:
        th = tag_history.c
        for chunk in _chunks(sorted(by_tag)):
            for repo, digest in conn.execute(
                select(th.repository, th.digest).where(
                    tuple_(th.repository, th.tag).in_(chunk), th.valid_from <= at,
                    or_(th.valid_to.is_(None), th.valid_to > at))
            ):
                running.add((repo, digest))
    return running


def reclaimable_bytes(conn: Connection, keys: Iterable[Key]) -> int:
    """Bytes garbage collection would free after deleting these manifests.

    Counted once each: the manifests' own blobs and the config and layer blobs that no
    remaining (not deleted, not in ``keys``) manifest in any repository still references. An
    index takes along its children that nothing else keeps (no tag, no other live parent):
    the executor deletes them after their index (Distribution 2.x's GC would otherwise keep
    them as untagged manifests). Manifests never scanned contribute only what the inventory
    knows of them (their own size), and a blob shared with a never-scanned manifest is
    counted as freed: scan before trusting the figure.
    """
    doomed = _with_orphaned_children(conn, set(keys))
    if not doomed:
        return 0
    doomed_list = sorted(doomed)
    m = manifests.c
    own: dict[str, int] = {}
    for chunk in _chunks(doomed_list):
        for digest, size in conn.execute(select(m.digest, m.size).where(
                tuple_(m.repository, m.digest).in_(chunk))):
            own[digest] = max(own.get(digest, 0), int(size or 0))
    mb = manifest_blobs.c
    candidate: set[str] = set()
    for chunk in _chunks(doomed_list):
        candidate.update(b for (b,) in conn.execute(
            select(mb.blob).where(tuple_(mb.repository, mb.digest).in_(chunk))))
    kept: set[str] = set()
    for chunk in _chunks(sorted(candidate)):
        for repo, digest, blob in conn.execute(
            select(mb.repository, mb.digest, mb.blob)
            .join(manifests, and_(m.repository == mb.repository, m.digest == mb.digest))
            .where(mb.blob.in_(chunk), m.deleted_at.is_(None))
        ):
            if (repo, digest) not in doomed:
                kept.add(blob)
    # A manifest's JSON is itself a blob, shared by every repository holding that digest.
    for chunk in _chunks(sorted(own)):
        for repo, digest in conn.execute(select(m.repository, m.digest).where(
                m.digest.in_(chunk), m.deleted_at.is_(None))):
            if (repo, digest) not in doomed:
                own.pop(digest, None)
    freed = sorted((candidate - kept) - set(own))
    total = sum(own.values())
    for chunk in _chunks(freed):
        total += int(conn.execute(select(func.coalesce(func.sum(blobs.c.size), 0))
                                  .where(blobs.c.digest.in_(chunk))).scalar_one())
    return total


def _with_orphaned_children(conn: Connection, doomed: set[Key]) -> set[Key]:
    mc, th = manifest_children.c, tag_history.c
    frontier = set(doomed)
    while frontier:
        children: set[Key] = set()
        for chunk in _chunks(sorted(frontier)):
            children.update((r, c) for r, c in conn.execute(
                select(mc.repository, mc.child).where(tuple_(mc.repository, mc.parent)
                                                      .in_(chunk))))
        children -= doomed
        if not children:
            break
        keep: set[Key] = set()
        for chunk in _chunks(sorted(children)):
            for repo, parent, child in conn.execute(
                select(mc.repository, mc.parent, mc.child)
                .join(manifests, and_(manifests.c.repository == mc.repository,
                                      manifests.c.digest == mc.parent))
                .where(tuple_(mc.repository, mc.child).in_(chunk),
                       manifests.c.deleted_at.is_(None))
            ):
                if (repo, parent) not in doomed:
                    keep.add((repo, child))
            keep.update((r, d) for r, d in conn.execute(
                select(th.repository, th.digest).where(
                    tuple_(th.repository, th.digest).in_(chunk), th.valid_to.is_(None))))
        frontier = children - keep
        doomed |= frontier
    return doomed


def list_inventory(
    conn: Connection, *, now: datetime, repository_glob: str | None = None
) -> list[dict[str, Any]]:
    """One dict per manifest not deleted at ``now``: repository, digest, tags, pushed_at,
    last_used_at, uses, non_use_pulls, running, referenced (the declared references that
    keep it, ``"source: file:line"``), bytes (None when never scanned)."""

    m = manifests.c
    query = select(m.repository, m.digest, m.first_seen, m.total_bytes).where(
        or_(m.deleted_at.is_(None), m.deleted_at > now), m.first_seen <= now)
    rows = [r for r in conn.execute(query.order_by(m.repository, m.digest))
            if repository_glob is None or fnmatch.fnmatchcase(r.repository, repository_glob)]
    ru = rollups.c
    usage: dict[Key, dict[str, Any]] = defaultdict(lambda: {"uses": 0, "non_use_pulls": 0,
                                                            "last_used_at": None,
                                                            "pushed_at": None})
    for repo, digest, action, klass, count, first_at, last_at in conn.execute(
        select(ru.repository, ru.digest, ru.action, ru.usage, func.sum(ru["count"]),
               func.min(ru.first_at), func.max(ru.last_at))
        .where(ru.first_at <= now, ru.digest != "")
        .group_by(ru.repository, ru.digest, ru.action, ru.usage)
    ):
        u = usage[(repo, digest)]
        if klass == "use" and action in ("pull", "deploy"):
            u["uses"] += int(count)
            u["last_used_at"] = max(filter(None, (u["last_used_at"], min(last_at, now))))
        elif action == "pull":
            u["non_use_pulls"] += int(count)
        elif action == "push":
            u["pushed_at"] = min(filter(None, (u["pushed_at"], first_at)))
    tags = current_tags(conn, at=now)
    running = running_digests(conn, at=now)
    referenced = declared_references(conn, at=now, with_source=True)
    mc = manifest_children.c
    parents: dict[Key, set[str]] = defaultdict(set)
    for repo, parent, child in conn.execute(select(mc.repository, mc.parent, mc.child)):
        if (repo, child) in running:
            parents[(repo, parent)].add(child)
    out = []
    for r in rows:
        key = (r.repository, r.digest)
        u = usage.get(key) or {"uses": 0, "non_use_pulls": 0, "last_used_at": None,
                               "pushed_at": None}
        out.append({
            "repository": r.repository,
            "digest": r.digest,
            "tags": tags.get(key, []),
            "pushed_at": u["pushed_at"] or r.first_seen,
            "last_used_at": u["last_used_at"],
            "uses": u["uses"],
            "non_use_pulls": u["non_use_pulls"],
            "running": key in running or bool(parents.get(key)),
            "referenced": referenced.get(key, []),
            "bytes": int(r.total_bytes) if r.total_bytes is not None else None,
        })
    return out
