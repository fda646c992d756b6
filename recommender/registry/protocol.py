"""The registry seam: what tagwarden needs of a registry, whatever speaks to it.

Everything outside ``recommender/registry/`` (the scan, the executor, backups, the scheduler,
the CLI) is typed on these protocols and gets its registry from :func:`.factory.open` (or
:func:`.factory.open_async`), never from a concrete client. A backend is a module of this
package with an ``open_registry`` function (see :mod:`.factory`); the Distribution HTTP API
(``kind = "distribution"``: Distribution, Harbor, GitLab, Quay, the clouds' ``/v2``) is one,
Amazon ECR (``kind = "ecr"``) another.

Conventions every backend keeps:

- Repositories are named as the registry names them (``team/app``), without its host.
- Digests are ``algorithm:hex`` strings of the manifest's exact bytes (``sha256:...``).
- Failures raise :class:`~recommender.errors.RegistryError` or a subclass, translated once in
  the backend: :class:`~recommender.errors.NotFound` for a missing repository, tag or
  manifest; :class:`~recommender.errors.AuthError` for refused credentials;
  :class:`~recommender.errors.Unsupported` for an operation the registry does not offer;
  ``temporary=True`` when a later retry may succeed (throttling, 5xx). Backends retry
  temporary failures of reads themselves (with backoff); deletes are not retried by the
  backend (the executor schedules its own retries).
- Methods are safe to call from several threads at once (the executor's workers share one
  registry); an :class:`AsyncRegistry` is used from one event loop at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from .models import Manifest, Referrer

__all__ = [
    "AsyncRegistry",
    "CallRecorder",
    "Deleted",
    "ImageRecord",
    "Reclaim",
    "ReclaimHint",
    "Registry",
    "WritableRegistry",
]


class Reclaim(StrEnum):
    """How a registry gives the storage of deleted manifests back."""

    OFFLINE_GC = "offline-gc"  # an operator runs a command with the registry read-only
    GC_JOB = "gc-job"  # the registry's own garbage-collection job (Harbor), on its schedule
    IMMEDIATE = "immediate"  # freed when the delete returns (ECR): no step to run


@dataclass(frozen=True)
class ReclaimHint:
    """What must happen after deletions before the space is free, for reports and forecasts.

    ``command``: the exact step to run (an offline GC command), None when there is none;
    ``note``: one sentence for people (shown after ``execute`` and in the forecast).
    """

    kind: Reclaim
    note: str
    command: str | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One manifest of a repository as a bulk listing reports it (ECR's ``describe_images``).

    ``digest`` and ``tags`` are always filled (``tags`` empty for an untagged manifest); the
    rest is None where the registry does not say. ``size``: the registry's own figure in
    bytes (ECR: compressed layers and config of the image); ``pushed_at``/``last_pulled_at``
    timezone-aware UTC; ``media_type`` the manifest's own (an index's for a multi-arch
    image); ``artifact_media_type`` the config's or artifact type when the registry reports
    one (tells signatures and SBOMs from images without fetching them).
    """

    digest: str
    tags: tuple[str, ...] = ()
    media_type: str | None = None
    size: int | None = None
    pushed_at: datetime | None = None
    last_pulled_at: datetime | None = None
    artifact_media_type: str | None = None


@dataclass(frozen=True)
class Deleted:
    """What became of one digest handed to :meth:`Registry.delete_many`.

    ``outcome``: ``"deleted"``; ``"gone"`` (it was not there: someone else deleted it,
    success by other hands); or ``"failed"`` with ``error`` set (the
    :class:`~recommender.errors.RegistryError` the registry's answer translates to; its
    ``temporary`` says whether a retry may help).
    """

    digest: str
    outcome: str
    error: Exception | None = None


@runtime_checkable
class CallRecorder(Protocol):
    """Receives every call a backend makes to its registry (the executor's audit trail).

    ``operation``: the HTTP method or API action (``DELETE``, ``BatchDeleteImage``);
    ``target``: where, with nothing secret in it (a redacted URL, ``ecr:team/app``);
    ``status``: the HTTP status or API outcome, or the exception's class name when no answer
    came; ``retry_after``: seconds the registry asked to wait (429/503, throttling), if any.
    """

    def record(self, operation: str, target: str, status: int | str,
               retry_after: float | None = None) -> None: ...


class Registry(Protocol):
    """The synchronous face of a registry: the executor, backups, the CLI."""

    @property
    def location(self) -> str:
        """Where this registry is, for reports and the scans table: a URL or an ARN-like name,
        with no credentials or secret query values in it."""
        ...

    @property
    def reclaim(self) -> ReclaimHint:
        """How storage comes back after this registry's deletions (see :class:`ReclaimHint`)."""
        ...

    def repositories(self) -> list[str]:
        """Every repository the credentials may list (the catalog), in the registry's order."""
        ...

    def list_tags(self, repo: str) -> list[str]:
        """Every tag of ``repo``, all pages. :class:`NotFound` when the repository is not."""
        ...

    def list_images(self, repo: str) -> list[ImageRecord] | None:
        """Every manifest of ``repo`` with its tags, sizes and push times in one bulk listing,
        all pages; or None when the registry has no such listing (Distribution), so the
        caller resolves tags one at a time. A backend that returns a list must include every
        manifest the registry reports, tagged or not (children of an index included, as ECR
        lists them), so the scan can read manifests only for digests it has not seen."""
        ...

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        """The manifest at a tag or digest as stored: exact bytes, media type, parsed JSON and
        its digest, verified by hashing the bytes (an index is asked for as an index: never
        converted to one platform). :class:`NotFound` when it is not there."""
        ...

    def head_manifest(self, repo: str, ref: str) -> str | None:
        """The digest a tag or digest reference names now, or None when it does not exist;
        cheap (no body where the registry allows) and must not count as a pull."""
        ...

    def resolve(self, repo: str, tag: str) -> str:
        """The digest ``tag`` names now, verified; :class:`NotFound` when the tag is gone."""
        ...

    def get_blob(self, repo: str, digest: str) -> bytes:
        """A blob's bytes (configs: small), verified against ``digest``."""
        ...

    def blob_size(self, repo: str, digest: str) -> int | None:
        """A blob's size in bytes, or None when the repository does not hold it."""
        ...

    def referrers(self, repo: str, digest: str) -> list[Referrer]:
        """The manifests that refer to ``digest``: OCI ``subject`` (the referrers API where the
        registry has it, else what it can find) and cosign's ``sha256-<hex>.sig/.att/.sbom``
        tags. Empty when none."""
        ...

    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete one manifest by digest; every tag on it goes with it. :class:`NotFound`
        when it is already gone (the caller treats that as done)."""
        ...

    def delete_many(self, repo: str, digests: Sequence[str]) -> list[Deleted]:
        """Delete several manifests of one repository, one :class:`Deleted` per digest in the
        order given. The caller orders them (an index before its children, a subject with its
        referrers after it); a backend with a batch call keeps that order across batches and
        stops at nothing: each digest gets its own outcome."""
        ...

    def untag(self, repo: str, tag: str) -> None:
        """Remove ``tag`` alone, leaving its manifest (and other tags) in place.
        :class:`Unsupported` where the registry cannot (Distribution before v3)."""
        ...

    def close(self) -> None:
        """Release connections and threads. The object is not used afterwards."""
        ...


class WritableRegistry(Registry, Protocol):
    """A registry tagwarden can also push to: restoring a backup, copying to a backup
    registry, the demo. Only the Distribution backend is one today."""

    def push_blob(self, repo: str, data: bytes, *, mount_from: str | None = None) -> str:
        """Upload ``data`` (nothing sent when already there); returns its digest."""
        ...

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """Store a manifest at a tag or digest; returns its digest, verified."""
        ...


class AsyncRegistry(Protocol):
    """The asyncio face of the reads a scan makes, with :class:`Registry`'s contracts.

    :func:`.factory.open_async` gives a backend's own when it has one (Distribution: many
    requests in flight on one thread) and otherwise runs the synchronous :class:`Registry`
    in worker threads, so a backend need only write the synchronous one.
    """

    @property
    def location(self) -> str: ...

    @property
    def reclaim(self) -> ReclaimHint: ...

    async def repositories(self) -> list[str]: ...

    async def list_tags(self, repo: str) -> list[str]: ...

    async def list_images(self, repo: str) -> list[ImageRecord] | None: ...

    async def get_manifest(self, repo: str, ref: str) -> Manifest: ...

    async def head_manifest(self, repo: str, ref: str) -> str | None: ...

    async def get_blob(self, repo: str, digest: str) -> bytes: ...

    async def referrers(self, repo: str, digest: str) -> list[Referrer]: ...

    async def close_idle(self) -> None:
        """Close connections bound to the running event loop; the object stays usable from
        a later loop (a scan per ``asyncio.run``)."""
        ...

    async def aclose(self) -> None:
        """Release everything. The object is not used afterwards."""
        ...
