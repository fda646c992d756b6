"""The last re-check of an item before its DELETE: the store's facts, then the registry's.

Raises :class:`Skip` with the reason when the item must stay (steps 1 to 4 of the package's
doc). One :class:`Recheck` serves one run: it reads each repository's tags from the registry
once, and knows which digests the run has already deleted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, false, func, or_, select

from ..config import Config
from ..errors import NotFound
from ..registry import Registry
from ..store import Store
from ..store.tables import (
    k8s_snapshots,
    manifest_children,
    manifests,
    rollups,
    running_refs,
    tag_history,
)
from .items import DueItem, Skip

__all__ = ["Recheck", "guardrails"]


def guardrails(conn: Connection, config: Config, *, now: datetime,
               candidates: list[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """The recommender's guardrails for ``candidates`` as of ``now`` (empty list: none keeps it).

    "not alive" means the store does not know the manifest as present; whether it exists is
    the registry's to say (step 2), so that reason is not a guardrail here.
    """
    if not candidates:
        return {}
    from .. import policy

    found = policy.evaluate(conn, config, now=now, candidates=candidates)
    return {key: [r for r in found.get(key, []) if not r.startswith("not alive")]
            for key in candidates}


@dataclass(frozen=True)
class _RepoView:
    """The registry's tags of one repository: tag -> digest, platform -> [(index, tag)]."""

    tags: dict[str, str | None]
    parents: dict[str, list[tuple[str, str]]]


class Recheck:
    """The re-checks of one run against ``store`` and the registry behind ``client``.

    ``gone`` is the run's set of (repository, digest) deleted (or that would be) so far:
    the run adds to it between its phases.
    """

    def __init__(self, store: Store, client: Registry, gone: set[tuple[str, str]]) -> None:
        self.store = store
        self.client = client
        self._gone = gone
        # What the registry's tags name, per repository, read once per run (_registry_view)
        self._tags_now: dict[str, _RepoView] = {}
        self._tags_locks: dict[str, threading.Lock] = {}
        self._tags_guard = threading.Lock()

    def check(self, item: DueItem, now: datetime, kept: list[str]) -> str:
        """Raise :class:`Skip` with the reason, or return "gone" or a summary of the checks."""
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
                raise Skip(f"used since the suggestion: {used[2]} of {used[0] or used[1]} at "
                            f"{used[3].isoformat()}")
            pod = self._running(conn, item, family, now)
            if pod is not None:
                raise Skip(f"runs now: {pod}")
            added = conn.execute(
                select(tag_history.c.tag).where(tag_history.c.repository == item.repository)
                .where(tag_history.c.digest == item.digest)
                .where(tag_history.c.valid_to.is_(None))
                .where(tag_history.c.valid_from > item.suggested_at)
                .where(tag_history.c.tag.not_in(list(item.tags) or [""]))).scalars().first()
            if added is not None:
                raise Skip(f"tagged since the suggestion: {added}")
        if kept:
            raise Skip("guardrail: " + "; ".join(kept))
        if self.client.head_manifest(item.repository, item.digest) is None:
            return "gone"
        if item.subject and (item.repository, item.subject) not in self._gone and \
                self.client.head_manifest(item.repository, item.subject) is not None:
            raise Skip(f"its subject {item.subject} is kept (referrers go only with it)")
        for parent in item.parents:
            if (item.repository, parent) not in self._gone and \
                    self.client.head_manifest(item.repository, parent) is not None:
                raise Skip(f"a platform of index {parent}, which is kept")
        for tag in item.tags:
            try:
                now_at = self.client.resolve(item.repository, tag)
            except NotFound:
                continue  # the tag was removed: nothing left to protect
            if now_at != item.digest:
                raise Skip(f"tag moved: {tag} now points to {now_at}")
        # A tag put on the digest after the suggestion whose notification was lost is known
        # only to the registry; deleting the digest would delete that tag too (an alias, a
        # promotion to "prod").
        view = self._registry_view(item.repository)
        for tag, at in sorted(view.tags.items()):
            if at == item.digest and tag not in item.tags:
                raise Skip(f"tagged since the suggestion: {tag} (found in the registry)")
        # Likewise a tagged index that lists the digest as a platform (a multi-arch release
        # reusing the image) and that the scan has not seen: the store's parents miss it.
        for parent, tag in view.parents.get(item.digest, ()):
            if (item.repository, parent) not in self._gone:
                raise Skip(f"a platform of index {parent} (tag {tag}), which is kept")
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
