"""The scan: catalog, tags, manifests, index children and config blobs, walked with bounded
concurrency; each repository's findings handed to :func:`.write.write_repo`."""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select, update

from ..collector.writer import EventWriter
from ..errors import NotFound, RegistryError
from ..registry import AsyncRegistry, ImageRecord, Manifest, referrer_kind
from ..registry import mediatypes as mt
from ..store import Store
from ..store.tables import manifests, scans
from ..timeutil import parse_time
from .lastpull import last_pull_events
from .report import RepoResult, ScanReport, Seen
from .write import write_repo

__all__ = ["scan", "scan_async"]


def scan(
    store: Store,
    client: AsyncRegistry,
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
    client: AsyncRegistry,
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
    registry = client.location
    with store.begin() as conn:
        scan_id = int(conn.execute(
            scans.insert().values(registry=registry, started_at=now).returning(scans.c.id)
        ).scalar_one())
    report = ScanReport(scan_id=scan_id, registry=registry)
    repos = await client.repositories()
    with store.connect() as conn:
        known_repos = {r for (r,) in conn.execute(select(manifests.c.repository).distinct()
                                                  .where(manifests.c.deleted_at.is_(None)))}
    wanted = sorted(set(repos) | known_repos)
    if repository_glob:
        wanted = [r for r in wanted if fnmatch.fnmatchcase(r, repository_glob)]
    if progress:
        progress("repositories", len(wanted))
    walk = _Walk(store, client, report, now=now, listed=set(repos), concurrency=concurrency,
                 read_configs=read_configs, progress=progress)
    await asyncio.gather(*(walk.repository(repo) for repo in wanted))
    report.repositories = len(wanted)
    report.seconds = time.monotonic() - started
    with store.begin() as conn:
        conn.execute(update(scans).where(scans.c.id == scan_id).values(
            finished_at=now + timedelta(seconds=report.seconds),
            repositories=report.repositories, tags=report.tags, manifests=report.manifests,
            errors=report.errors or None,
        ))
    return report


class _Walk:
    """One scan's walk of the registry: at most ``concurrency`` requests in flight, each config
    blob fetched once, one repository written at a time; findings and failures go to
    ``report``. ``listed``: the repositories the catalog lists (the others are only known to
    the store, so their tags are not asked for)."""

    def __init__(self, store: Store, client: AsyncRegistry, report: ScanReport, *,
                 now: datetime, listed: set[str], concurrency: int, read_configs: bool,
                 progress: Callable[[str, int], None] | None) -> None:
        self.store = store
        self.client = client
        self.report = report
        self.now = now
        self.listed = listed
        self.read_configs = read_configs
        self.progress = progress
        self._gate = asyncio.Semaphore(max(1, concurrency))
        self._configs: dict[str, asyncio.Task[dict[str, Any] | None]] = {}
        self._write_lock = asyncio.Lock()

    async def _call(self, coro_fn: Callable[..., Any], *args: Any) -> Any:
        async with self._gate:
            return await coro_fn(*args)

    async def _fetch_config(self, repo: str, digest: str) -> dict[str, Any] | None:
        try:
            doc = orjson.loads(await self._call(self.client.get_blob, repo, digest))
        except (RegistryError, orjson.JSONDecodeError):
            return None  # a missing or odd config only costs us created/labels
        return doc if isinstance(doc, dict) else None

    async def _config_of(self, repo: str, digest: str) -> dict[str, Any] | None:
        # Config blobs are content-addressed: fetch each once per scan, whatever the repo.
        if digest not in self._configs:
            self._configs[digest] = asyncio.ensure_future(self._fetch_config(repo, digest))
        return await self._configs[digest]

    async def _describe(self, repo: str, manifest: Manifest, prior: Any) -> Seen:
        seen = Seen(manifest, subject=manifest.subject)
        config = manifest.config
        if prior is not None and (prior.created_at is not None or prior.platform is not None):
            # Content-addressed, so immutable: what an earlier scan read from the config
            # still holds. Re-scans skip the config blobs.
            seen.created, seen.labels, seen.platform = (prior.created_at, prior.labels,
                                                        prior.platform)
        elif (self.read_configs and config and mt.is_config(config.get("mediaType"))
              and config.get("digest")):
            doc = await self._config_of(repo, config["digest"])
            if doc:
                seen.created = _parse_created(doc.get("created"))
                labels = (doc.get("config") or {}).get("Labels")
                seen.labels = labels if isinstance(labels, dict) and labels else None
                if doc.get("os"):
                    seen.platform = _platform(doc)
        if seen.subject:
            seen.referrer = _kind_of_artifact(manifest.artifact_type, manifest.layers)
        return seen

    async def _fetch(self, repo: str, prior: dict[str, Any], ref: str) -> Seen:
        # The manifest and what its config says in one task, not one task for each
        # (each asyncio task costs the scan CPU; bench/, S2).
        manifest = await self._call(self.client.get_manifest, repo, ref)
        return await self._describe(repo, manifest, prior.get(manifest.digest))

    async def repository(self, repo: str) -> None:
        """Scan ``repo`` and write what was found; its failures go to the report."""
        result = RepoResult(repo)
        m = manifests.c
        with self.store.connect() as conn:
            prior = {row.digest: row for row in conn.execute(
                select(m.digest, m.deleted_at, m.last_scanned, m.created_at, m.labels,
                       m.platform).where(m.repository == repo))}
        pulls: list[tuple[str, datetime]] = []
        try:
            images = (await self._call(self.client.list_images, repo)
                      if repo in self.listed else [])
            tags = (await self._call(self.client.list_tags, repo)
                    if images is None and repo in self.listed else [])
        except NotFound:
            images, tags = [], []
        except RegistryError as exc:
            self.report.errors.append({"repository": repo, **_error(exc)})
            return
        if images is None:  # no bulk listing (Distribution): tag by tag
            pending = await self._tagged(result, prior, tags)
            await self._children(result, prior, pending)
            _annotate(result)
            await self._untagged(result, prior)
        else:
            await self._listed(result, prior, images)
            pulls = [(i.digest, i.last_pulled_at) for i in images if i.last_pulled_at]
        async with self._write_lock:
            await asyncio.to_thread(self._write, result, pulls)
        if self.progress:
            self.progress("repository", 1)

    def _write(self, result: RepoResult, pulls: list[tuple[str, datetime]]) -> None:
        write_repo(self.store, result, self.now, self.report)
        if pulls:
            EventWriter(self.store).write(
                last_pull_events(result.repository, pulls, self.client.location), now=self.now)

    async def _listed(self, result: RepoResult, prior: dict[str, Any],
                      images: list[ImageRecord]) -> None:
        """A repository from a bulk listing (ECR): tags, sizes and presence come with it, so
        only manifests the store has not seen are read (on ECR each read may count as a
        pull); the others are content-addressed and already recorded."""
        repo = result.repository
        listed = {i.digest: i for i in images}
        known = {d for d, row in prior.items() if row.deleted_at is None}
        new = [d for d in listed if d not in known]
        fetched = await asyncio.gather(*(self._fetch(repo, prior, d) for d in new),
                                       return_exceptions=True)
        pending: list[Manifest] = []
        for digest, got in zip(new, fetched, strict=True):
            if isinstance(got, NotFound):
                listed.pop(digest)  # deleted between the listing and the read
                continue
            if isinstance(got, RegistryError):
                self.report.errors.append({"repository": repo, "digest": digest, **_error(got)})
                result.failed_tags.update(listed.pop(digest).tags)
                continue
            if isinstance(got, BaseException):
                raise got
            if got.created is None:
                got.created = listed[digest].pushed_at  # the config is not read on ECR
            result.seen[digest] = got
            pending.append(got.manifest)
        for image in listed.values():
            result.tags.update((tag, image.digest) for tag in image.tags)
        await self._children(result, prior, pending, skip=known & set(listed))
        _annotate(result)
        result.alive_untagged.update((known & set(listed)) - set(result.seen))
        result.gone.update(known - set(listed))

    async def _tagged(self, result: RepoResult, prior: dict[str, Any],
                      tags: list[str]) -> list[Manifest]:
        """Fetch the manifest of each tag; returns those to look into for children."""
        repo = result.repository
        fetched = await asyncio.gather(*(self._fetch(repo, prior, tag) for tag in tags),
                                       return_exceptions=True)
        pending: list[Manifest] = []
        for tag, got in zip(tags, fetched, strict=True):
            if isinstance(got, NotFound):
                continue  # deleted between the listing and the fetch
            if isinstance(got, RegistryError):
                self.report.errors.append({"repository": repo, "tag": tag, **_error(got)})
                result.failed_tags.add(tag)
                continue
            if isinstance(got, BaseException):
                raise got
            digest = got.manifest.digest
            result.tags[tag] = digest
            if digest not in result.seen:
                result.seen[digest] = got
                pending.append(got.manifest)
        return pending

    async def _children(self, result: RepoResult, prior: dict[str, Any],
                        pending: list[Manifest], skip: set[str] | None = None) -> None:
        """Index children, level by level (an index of indexes is legal); those in ``skip``
        are linked but not read (already recorded)."""
        skip = skip or set()
        repo = result.repository
        while pending:
            wanted_children: list[tuple[str, str, str | None]] = []
            for manifest in pending:
                for desc in manifest.children:
                    platform = _platform(desc.get("platform") or {}) or None
                    result.children.append((manifest.digest, desc["digest"], platform))
                    if desc["digest"] not in result.seen and desc["digest"] not in skip:
                        wanted_children.append((manifest.digest, desc["digest"], platform))
            pending = []
            unique = list(dict.fromkeys(c[1] for c in wanted_children))
            got_children = await asyncio.gather(*(self._fetch(repo, prior, d) for d in unique),
                                                return_exceptions=True)
            for digest, seen in zip(unique, got_children, strict=True):
                if isinstance(seen, RegistryError):
                    self.report.errors.append({"repository": repo, "digest": digest,
                                               **_error(seen)})
                elif isinstance(seen, BaseException):
                    raise seen
                else:
                    result.seen[digest] = seen
                    pending.append(seen.manifest)

    async def _untagged(self, result: RepoResult, prior: dict[str, Any]) -> None:
        """Known manifests not reached through a tag: untagged but alive, or really gone."""
        repo = result.repository
        known = {d for d, row in prior.items() if row.deleted_at is None}
        missing = sorted(known - set(result.seen))
        heads = await asyncio.gather(
            *(self._call(self.client.head_manifest, repo, d) for d in missing),
            return_exceptions=True)
        for digest, head in zip(missing, heads, strict=True):
            if isinstance(head, RegistryError):
                self.report.errors.append({"repository": repo, "digest": digest,
                                           **_error(head)})
            elif isinstance(head, BaseException):
                raise head
            elif head is None:
                result.gone.add(digest)
            else:
                result.alive_untagged.add(digest)


def _annotate(result: RepoResult) -> None:
    """What the manifests say of each other: a child's platform from its index, a cosign
    tag's subject and kind on the manifest it names."""
    for _parent, child, platform in result.children:
        if platform and child in result.seen and result.seen[child].platform is None:
            result.seen[child].platform = platform
    for tag, digest in result.tags.items():
        cosign = referrer_kind(tag)
        if cosign and digest in result.seen:
            result.seen[digest].subject = result.seen[digest].subject or cosign[0]
            result.seen[digest].referrer = cosign[1]


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
