"""Recording what a scan saw: manifests, blobs, their links, index children, and the tags
reconciled with what telemetry wrote."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Collection
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, or_, select, text, update

from ..collector.bulk import insert_rows
from ..store import Store
from ..store.tables import blobs, manifest_blobs, manifest_children, manifests, tag_history
from .report import RepoResult, ScanReport

__all__ = ["ManifestRow", "write_repo"]

# The scan's writes go through the collector's plain-DBAPI multi-row INSERT: SQLAlchemy Core's
# executemany cost more CPU than the rest of a first scan's writes (bench/, S2).
class ManifestRow(NamedTuple):
    """One ``manifests`` row as the scan writes it: its fields are the columns, in order."""

    repository: str
    digest: str
    media_type: str
    artifact_type: str | None
    size: int
    total_bytes: int
    created_at: datetime | None
    first_seen: datetime
    last_scanned: datetime
    deleted_at: datetime | None
    subject: str | None
    referrer_kind: str | None
    is_index: bool
    labels: str  # JSON text (see _json_text)
    platform: str | None


_MANIFEST_COLUMNS = ManifestRow._fields
_MANIFEST_UPSERT = "ON CONFLICT (repository, digest) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in _MANIFEST_COLUMNS if c not in ("repository", "digest",
                                                                  "first_seen"))
_BLOB_UPSERT = ("ON CONFLICT (digest) DO UPDATE SET size = excluded.size, "
                "media_type = coalesce(blobs.media_type, excluded.media_type)")


def _lock_repository(conn: Connection, repo: str) -> None:
    """The collector writer's per-repository tag-history lock (same key): no lost updates."""
    if conn.dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.blake2b(b"tag_history:" + repo.encode(), digest_size=8)
                         .digest(), "big", signed=True)
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def write_repo(store: Store, result: RepoResult, now: datetime, report: ScanReport) -> None:
    repo = result.repository
    blob_rows: dict[str, tuple[str, int, Any]] = {}
    links: list[tuple[str, str, str]] = []
    totals: dict[str, int] = {}
    for digest, seen in result.seen.items():
        own = 0
        for desc in seen.manifest.blobs:
            if not desc.get("digest"):
                continue
            size = int(desc.get("size") or 0)
            blob_rows[desc["digest"]] = (desc["digest"], size, desc.get("mediaType"))
            links.append((repo, digest, desc["digest"]))
            own += size
        totals[digest] = len(seen.manifest.body) + own
    child_map: dict[str, set[str]] = defaultdict(set)
    for parent, child, _ in result.children:
        child_map[parent].add(child)

    def total(digest: str, path: frozenset[str] = frozenset()) -> int:
        base = totals.get(digest, 0)
        return base + sum(total(c, path | {digest}) for c in child_map.get(digest, ())
                          if c not in path)

    rows = []
    for digest, seen in sorted(result.seen.items()):
        m = seen.manifest
        rows.append(ManifestRow(
            repository=repo, digest=digest, media_type=m.media_type,
            artifact_type=(m.artifact_type or None) and m.artifact_type[:128],
            size=len(m.body), total_bytes=total(digest), created_at=seen.created,
            first_seen=now, last_scanned=now, deleted_at=None, subject=seen.subject,
            referrer_kind=seen.referrer, is_index=m.is_index, labels=_json_text(seen.labels),
            platform=seen.platform,
        ))
    with store.begin() as conn:
        _lock_repository(conn, repo)
        if rows:
            insert_rows(conn, manifests, _MANIFEST_COLUMNS, rows, suffix=_MANIFEST_UPSERT)
        if blob_rows:
            insert_rows(conn, blobs, ("digest", "size", "media_type"),
                        [blob_rows[k] for k in sorted(blob_rows)], suffix=_BLOB_UPSERT)
        if links:
            insert_rows(conn, manifest_blobs, ("repository", "digest", "blob"),
                        sorted(set(links)), suffix="ON CONFLICT DO NOTHING")
        if result.children:
            insert_rows(conn, manifest_children, ("repository", "parent", "child", "platform"),
                        [(repo, p, c, pl) for p, c, pl in sorted(set(result.children))],
                        suffix="ON CONFLICT DO NOTHING")
        if result.alive_untagged:
            conn.execute(update(manifests).where(
                manifests.c.repository == repo,
                manifests.c.digest.in_(sorted(result.alive_untagged)),
            ).values(last_scanned=now))
        if result.gone:
            conn.execute(update(manifests).where(
                manifests.c.repository == repo, manifests.c.digest.in_(sorted(result.gone)),
                manifests.c.deleted_at.is_(None),
            ).values(deleted_at=now))
        opened, closed = _reconcile_tags(conn, repo, result.tags, now,
                                         keep=result.failed_tags)
    report.tags += len(result.tags)
    report.manifests += len(result.seen)
    report.blobs += len(blob_rows)
    report.tags_opened += opened
    report.tags_closed += closed
    report.manifests_deleted += len(result.gone)


def _json_text(value: Any) -> str:
    """A JSON column's value as SQLAlchemy's JSON type writes it (``json.dumps``; None is
    JSON ``null``, not SQL NULL), so rows read back alike whichever way they were written."""
    return "null" if value is None else json.dumps(value)


def _reconcile_tags(
    conn: Connection, repo: str, listed: dict[str, str], now: datetime,
    *, keep: Collection[str] = (),
) -> tuple[int, int]:
    """Make the intervals open at ``now`` match what the registry lists. Tags in ``keep``
    (listed, but their manifest could not be read) are left as they were."""
    th = tag_history.c
    open_rows = conn.execute(
        select(th.id, th.tag, th.digest).where(
            th.repository == repo, th.valid_from <= now,
            or_(th.valid_to.is_(None), th.valid_to > now))
    ).all()
    current = {row.tag: row for row in open_rows}
    to_close = [row.id for row in open_rows
                if row.tag not in keep and listed.get(row.tag) != row.digest]
    if to_close:
        # A moved tag (we missed the push) or a vanished tag (we missed the delete) ends now.
        conn.execute(update(tag_history).where(th.id.in_(to_close)).values(valid_to=now))
    new = [
        (repo, tag, digest, now, None, "scan")
        for tag, digest in sorted(listed.items())
        if tag not in current or current[tag].digest != digest
    ]
    insert_rows(conn, tag_history,
                ("repository", "tag", "digest", "valid_from", "valid_to", "source"), new)
    return len(new), len(to_close)
