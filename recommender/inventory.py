"""The inventory: what a registry holds (the scan) and what the store knows per manifest.

Write side: :func:`scan` walks a registry with bounded concurrency (catalog → tags → manifests
→ index children → config blobs) and records ``scans``, ``manifests``, ``blobs``,
``manifest_blobs``, ``manifest_children`` and the current tag → digest map into ``tag_history``
(source ``scan``), reconciling with what telemetry wrote: a tag that moved without us seeing
the push is corrected, a tag no longer listed is closed, and a manifest no longer listed is
marked deleted only when it is not reachable by digest either (untagged is not gone).

Read side, used by the policy, the recommender and the executor: :func:`reclaimable_bytes`
(layer-deduplicated), :func:`list_inventory`, :func:`running_digests`, :func:`current_tags`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, and_, func, or_, select, text, tuple_, update

from .collector.bulk import insert_rows
from .errors import NotFound, RegistryError
from .refs.store import declared_references
from .registry import mediatypes as mt
from .registry.client import AsyncRegistryClient, Manifest, redact_url, referrer_kind
from .store import Store
from .store.tables import (
    blobs,
    k8s_snapshots,
    manifest_blobs,
    manifest_children,
    manifests,
    rollups,
    running_refs,
    scans,
    tag_history,
)
from .timeutil import parse_time

__all__ = [
    "ScanReport",
    "current_tags",
    "list_inventory",
    "reclaimable_bytes",
    "running_digests",
    "scan",
    "scan_async",
]

# The scan's writes go through the collector's plain-DBAPI multi-row INSERT: SQLAlchemy Core's
# executemany cost more CPU than the rest of a first scan's writes (bench/, S2).
_MANIFEST_COLUMNS = ("repository", "digest", "media_type", "artifact_type", "size",
                     "total_bytes", "created_at", "first_seen", "last_scanned", "deleted_at",
                     "subject", "referrer_kind", "is_index", "labels", "platform")
_MANIFEST_UPSERT = "ON CONFLICT (repository, digest) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in _MANIFEST_COLUMNS if c not in ("repository", "digest",
                                                                  "first_seen"))
_BLOB_UPSERT = ("ON CONFLICT (digest) DO UPDATE SET size = excluded.size, "
                "media_type = coalesce(blobs.media_type, excluded.media_type)")
_CHUNK = 400  # keys per IN (...) query: well under SQLite's and PostgreSQL's parameter limits
Key = tuple[str, str]  # (repository, digest)


@dataclass
class ScanReport:
    """What one scan saw and changed. ``errors``: one dict per repository or tag that failed."""

    scan_id: int
    registry: str
    repositories: int = 0
    tags: int = 0
    manifests: int = 0
    blobs: int = 0
    tags_opened: int = 0
    tags_closed: int = 0
    manifests_deleted: int = 0
    seconds: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"scanned {self.repositories} repositories, {self.tags} tags, "
                f"{self.manifests} manifests, {self.blobs} blobs in {self.seconds:.1f}s; "
                f"tags opened {self.tags_opened}, closed {self.tags_closed}; "
                f"manifests gone {self.manifests_deleted}; errors {len(self.errors)}")


@dataclass
class _Seen:
    """One manifest as fetched, with what its config blob said."""

    manifest: Manifest
    created: datetime | None = None
    labels: dict[str, str] | None = None
    platform: str | None = None
    subject: str | None = None
    referrer: str | None = None


@dataclass
class _RepoResult:
    repository: str
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest
    seen: dict[str, _Seen] = field(default_factory=dict)  # digest -> manifest
    children: list[tuple[str, str, str | None]] = field(default_factory=list)
    failed_tags: set[str] = field(default_factory=set)  # listed but not read: left as known
    gone: set[str] = field(default_factory=set)  # known digests no longer reachable
    alive_untagged: set[str] = field(default_factory=set)


# --- scanning -----------------------------------------------------------------------------------


def scan(
    store: Store,
    client: AsyncRegistryClient,
    *,
    now: datetime,
    concurrency: int = 16,
    repository_glob: str | None = None,
    progress: Callable[[str, int], None] | None = None,
    read_configs: bool = True,
) -> ScanReport:
    """Scan the registry behind ``client`` into ``store`` (see :func:`scan_async`)."""

    async def run() -> ScanReport:
        try:
            return await scan_async(store, client, now=now, concurrency=concurrency,
                                    repository_glob=repository_glob, progress=progress,
                                    read_configs=read_configs)
        finally:
            await client.close_idle()  # its connections end with this event loop

    return asyncio.run(run())


async def scan_async(
    store: Store,
    client: AsyncRegistryClient,
    *,
    now: datetime,
    concurrency: int = 16,
    repository_glob: str | None = None,
    progress: Callable[[str, int], None] | None = None,
    read_configs: bool = True,
) -> ScanReport:
    """Walk catalog, tags and manifests with at most ``concurrency`` requests in flight.

    ``read_configs=False`` skips the config blobs of manifests not scanned before (one request
    per new image: half a first scan's requests); their ``created_at``, labels and platform
    stay unknown until a scan that reads them.

    ``progress(event, n)`` is told ``("repositories", total)`` once, then ``("repository", 1)``
    per repository done. Failures of one repository or tag are recorded in the report and the
    scan goes on; a catalog that cannot be read raises :class:`RegistryError`.
    """
    started = time.monotonic()
    registry = redact_url(client.base_url)
    with store.begin() as conn:
        scan_id = int(conn.execute(
            scans.insert().values(registry=registry, started_at=now).returning(scans.c.id)
        ).scalar_one())
    report = ScanReport(scan_id=scan_id, registry=registry)
    gate = asyncio.Semaphore(max(1, concurrency))
    configs: dict[str, asyncio.Task[dict[str, Any] | None]] = {}
    write_lock = asyncio.Lock()

    async def call(coro_fn: Callable[..., Any], *args: Any) -> Any:
        async with gate:
            return await coro_fn(*args)

    repos = await client.catalog()
    with store.connect() as conn:
        known_repos = {r for (r,) in conn.execute(select(manifests.c.repository).distinct()
                                                  .where(manifests.c.deleted_at.is_(None)))}
    wanted = sorted(set(repos) | known_repos)
    if repository_glob:
        wanted = [r for r in wanted if fnmatch.fnmatchcase(r, repository_glob)]
    if progress:
        progress("repositories", len(wanted))
    listed = set(repos)

    async def fetch_config(repo: str, digest: str) -> dict[str, Any] | None:
        try:
            doc = orjson.loads(await call(client.get_blob, repo, digest))
        except (RegistryError, orjson.JSONDecodeError):
            return None  # a missing or odd config only costs us created/labels
        return doc if isinstance(doc, dict) else None

    async def config_of(repo: str, digest: str) -> dict[str, Any] | None:
        # Config blobs are content-addressed: fetch each once per scan, whatever the repo.
        if digest not in configs:
            configs[digest] = asyncio.ensure_future(fetch_config(repo, digest))
        return await configs[digest]

    async def describe(repo: str, manifest: Manifest, prior: Any) -> _Seen:
        seen = _Seen(manifest, subject=manifest.subject)
        config = manifest.config
        if prior is not None and (prior.created_at is not None or prior.platform is not None):
            # Content-addressed, so immutable: what an earlier scan read from the config
            # still holds. Re-scans skip the config blobs.
            seen.created, seen.labels, seen.platform = (prior.created_at, prior.labels,
                                                        prior.platform)
        elif (read_configs and config and mt.is_config(config.get("mediaType"))
              and config.get("digest")):
            doc = await config_of(repo, config["digest"])
            if doc:
                seen.created = _parse_created(doc.get("created"))
                labels = (doc.get("config") or {}).get("Labels")
                seen.labels = labels if isinstance(labels, dict) and labels else None
                if doc.get("os"):
                    seen.platform = _platform(doc)
        if seen.subject:
            seen.referrer = _kind_of_artifact(manifest.artifact_type, manifest.layers)
        return seen

    async def scan_repo(repo: str) -> None:
        result = _RepoResult(repo)
        m = manifests.c
        with store.connect() as conn:
            prior = {row.digest: row for row in conn.execute(
                select(m.digest, m.deleted_at, m.last_scanned, m.created_at, m.labels,
                       m.platform).where(m.repository == repo))}
        try:
            tags = await call(client.list_tags, repo) if repo in listed else []
        except NotFound:
            tags = []
        except RegistryError as exc:
            report.errors.append({"repository": repo, **_error(exc)})
            return
        async def fetch(ref: str) -> _Seen:
            # The manifest and what its config says in one task, not one task for each
            # (each asyncio task costs the scan CPU; bench/, S2).
            manifest = await call(client.get_manifest, repo, ref)
            return await describe(repo, manifest, prior.get(manifest.digest))

        fetched = await asyncio.gather(*(fetch(tag) for tag in tags), return_exceptions=True)
        pending: list[Manifest] = []
        for tag, got in zip(tags, fetched, strict=True):
            if isinstance(got, NotFound):
                continue  # deleted between the listing and the fetch
            if isinstance(got, RegistryError):
                report.errors.append({"repository": repo, "tag": tag, **_error(got)})
                result.failed_tags.add(tag)
                continue
            if isinstance(got, BaseException):
                raise got
            digest = got.manifest.digest
            result.tags[tag] = digest
            if digest not in result.seen:
                result.seen[digest] = got
                pending.append(got.manifest)
        # Index children, level by level (an index of indexes is legal).
        while pending:
            wanted_children: list[tuple[str, str, str | None]] = []
            for manifest in pending:
                for desc in manifest.children:
                    platform = _platform(desc.get("platform") or {}) or None
                    result.children.append((manifest.digest, desc["digest"], platform))
                    if desc["digest"] not in result.seen:
                        wanted_children.append((manifest.digest, desc["digest"], platform))
            pending = []
            unique = list(dict.fromkeys(c[1] for c in wanted_children))
            got_children = await asyncio.gather(*(fetch(d) for d in unique),
                                                return_exceptions=True)
            for digest, seen in zip(unique, got_children, strict=True):
                if isinstance(seen, RegistryError):
                    report.errors.append({"repository": repo, "digest": digest, **_error(seen)})
                elif isinstance(seen, BaseException):
                    raise seen
                else:
                    result.seen[digest] = seen
                    pending.append(seen.manifest)
        for _parent, child, platform in result.children:
            if platform and child in result.seen and result.seen[child].platform is None:
                result.seen[child].platform = platform
        for tag, digest in result.tags.items():
            cosign = referrer_kind(tag)
            if cosign and digest in result.seen:
                result.seen[digest].subject = result.seen[digest].subject or cosign[0]
                result.seen[digest].referrer = cosign[1]
        # Known manifests not reached through a tag: untagged but alive, or really gone.
        known = {d for d, row in prior.items() if row.deleted_at is None}
        missing = sorted(known - set(result.seen))
        heads = await asyncio.gather(
            *(call(client.head_manifest, repo, d) for d in missing), return_exceptions=True)
        for digest, head in zip(missing, heads, strict=True):
            if isinstance(head, RegistryError):
                report.errors.append({"repository": repo, "digest": digest, **_error(head)})
            elif isinstance(head, BaseException):
                raise head
            elif head is None:
                result.gone.add(digest)
            else:
                result.alive_untagged.add(digest)
        async with write_lock:
            await asyncio.to_thread(_write_repo, store, result, now, report)
        if progress:
            progress("repository", 1)

    await asyncio.gather(*(scan_repo(repo) for repo in wanted))
    report.repositories = len(wanted)
    report.seconds = time.monotonic() - started
    with store.begin() as conn:
        conn.execute(update(scans).where(scans.c.id == scan_id).values(
            finished_at=now + timedelta(seconds=report.seconds),
            repositories=report.repositories, tags=report.tags, manifests=report.manifests,
            errors=report.errors or None,
        ))
    return report


def _error(exc: RegistryError) -> dict[str, Any]:
    return {"error": exc.message, "status": exc.status, "code": exc.code}


def _platform(doc: dict[str, Any]) -> str:
    parts = [doc.get("os") or "", doc.get("architecture") or ""]
    if doc.get("variant"):
        parts.append(doc["variant"])
    return "/".join(parts).strip("/")[:64]


def _parse_created(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value)
    except Exception:  # noqa: BLE001 - a malformed ``created`` is simply unknown
        return None


def _kind_of_artifact(artifact_type: str | None, layers: Sequence[dict[str, Any]]) -> str:
    text_ = " ".join([artifact_type or ""] + [str(layer.get("mediaType")) for layer in layers])
    text_ = text_.lower()
    if any(w in text_ for w in ("signature", "cosign", "notary")):
        return "signature"
    if any(w in text_ for w in ("sbom", "spdx", "cyclonedx")):
        return "sbom"
    if any(w in text_ for w in ("in-toto", "attestation", "provenance")):
        return "attestation"
    return "other"


def _lock_repository(conn: Connection, repo: str) -> None:
    """The collector writer's per-repository tag-history lock (same key): no lost updates."""
    if conn.dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.blake2b(b"tag_history:" + repo.encode(), digest_size=8)
                         .digest(), "big", signed=True)
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def _write_repo(store: Store, result: _RepoResult, now: datetime, report: ScanReport) -> None:
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
        rows.append((
            repo, digest, m.media_type, (m.artifact_type or None) and m.artifact_type[:128],
            len(m.body), total(digest), seen.created, now, now, None, seen.subject,
            seen.referrer, m.is_index, _json_text(seen.labels), seen.platform,
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


# --- read side ----------------------------------------------------------------------------------


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
