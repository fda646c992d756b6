"""Amazon ECR as a registry: boto3's ECR API, not the Distribution HTTP API.

Reading is ``describe_repositories`` and ``describe_images`` (every image of a repository with
its tags, push time, size, media types and ``lastRecordedPullTime`` in one paged listing) plus
``batch_get_image`` for the manifests themselves, asked for with every manifest and index type
(ECR converts the answer to one platform otherwise). Deleting is ``batch_delete_image`` by
digest, which removes the image with all its tags, at most 100 ids per call; storage returns at
once (there is no garbage-collect step). Credentials come from boto3's default chain
(environment, profile, the pod's web identity): none are configured here.

On real ECR every ``batch_get_image`` moves the image's ``lastRecordedPullTime`` unless the
caller's role is registered with ``register_pull_time_update_exclusion``
(docs/operations.md): callers read manifests only for digests they have not seen before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from .. import __version__
from ..errors import AuthError, ConfigError, DigestMismatch, NotFound, RegistryError
from . import mediatypes as mt
from .client import Manifest, digest_of

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "BATCH_LIMIT",
    "DeleteFailure",
    "DeleteOrderError",
    "DeleteReport",
    "EcrImage",
    "EcrRegistry",
    "deletion_waves",
]

BATCH_LIMIT = 100  # ids per batch_get_image / batch_delete_image call (ECR's limit)
RECLAIM = "immediate"  # ECR frees an image's storage when it is deleted
# Indexes first, as for a Distribution registry (mediatypes.MANIFEST_ACCEPT): a multi-platform
# tag is read as the index it names, never as one platform's manifest.
ACCEPTED_MEDIA_TYPES: tuple[str, ...] = mt.MANIFEST_ACCEPT
_NOT_FOUND = frozenset({"RepositoryNotFoundException", "ImageNotFoundException",
                        "ImageNotFound", "RepositoryNotFound"})
_AUTH = frozenset({"AccessDeniedException", "UnrecognizedClientException",
                   "ExpiredTokenException", "InvalidSignatureException",
                   "AccessDenied", "InvalidClientTokenId"})
_TEMPORARY = frozenset({"ThrottlingException", "ServerException", "ServiceUnavailable",
                        "RequestTimeout", "TooManyRequestsException", "LimitExceededException"})


@dataclass(frozen=True)
class EcrImage:
    """One image as ``describe_images`` lists it. ``last_pull`` is ECR's
    ``lastRecordedPullTime``: coarse (ECR updates it at most about once a day) and absent for an
    image never pulled."""

    repository: str
    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime | None
    size: int | None
    last_pull: datetime | None
    media_type: str | None
    artifact_media_type: str | None

    @property
    def is_index(self) -> bool:
        return mt.is_index(self.media_type)


@dataclass(frozen=True)
class DeleteFailure:
    """One id ``batch_delete_image`` refused, with ECR's failure code and reason."""

    digest: str
    code: str
    reason: str


@dataclass
class DeleteReport:
    """What :meth:`EcrRegistry.delete_many` did: ``deleted`` by this call, ``already_gone``
    (ECR said ImageNotFound: someone else deleted them, which is what was wanted) and
    ``failures`` (refused; ``ImageReferencedByManifestList`` means an index still lists it)."""

    repository: str
    deleted: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    failures: list[DeleteFailure] = field(default_factory=list)
    calls: int = 0

    def raise_for_failures(self) -> None:
        """Raise for the first refused id: :class:`DeleteOrderError` when an index still
        lists it, :class:`RegistryError` otherwise."""
        for failure in self.failures:
            raise _delete_error(self.repository, failure)


class DeleteOrderError(RegistryError):
    """Raised when ECR refuses to delete an image because an index still lists it
    (``ImageReferencedByManifestList``): the index had to go first. ``detail`` names both."""


def _delete_error(repository: str, failure: DeleteFailure) -> RegistryError:
    text = (f"ECR refused to delete {repository}@{failure.digest}: {failure.code}"
            f" ({failure.reason})")
    if failure.code == "ImageReferencedByManifestList":
        return DeleteOrderError(text, code=failure.code, repository=repository,
                                digest=failure.digest, reason=failure.reason)
    return RegistryError(text, code=failure.code, repository=repository, digest=failure.digest,
                         reason=failure.reason, temporary=failure.code in _TEMPORARY)


def deletion_waves(digests: Sequence[str], manifests: dict[str, Manifest]) -> list[list[str]]:
    """``digests`` in the order ECR accepts their deletion: each wave's images are listed by
    no index still present when that wave runs. An index goes before the children it lists, a
    subject before its referrers (a kept subject keeps its signatures, as on Distribution);
    ``manifests`` holds what is known of the digests (absent ones have no relations)."""
    wanted = list(dict.fromkeys(digests))
    after: dict[str, set[str]] = {d: set() for d in wanted}  # digest -> what must go before
    members = set(wanted)
    for digest in wanted:
        manifest = manifests.get(digest)
        if manifest is None:
            continue
        for child in manifest.children:
            if child["digest"] in members and child["digest"] != digest:
                after[child["digest"]].add(digest)
        if manifest.subject in members and manifest.subject != digest:
            after[digest].add(manifest.subject)
    waves: list[list[str]] = []
    done: set[str] = set()
    while len(done) < len(wanted):
        wave = [d for d in wanted if d not in done and after[d] <= done]
        if not wave:  # a cycle cannot be built from digests; go on rather than loop
            wave = [d for d in wanted if d not in done]
        waves.append(wave)
        done.update(wave)
    return waves


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return None


class EcrRegistry:
    """One ECR registry (an account in a region), through a boto3 ECR client.

    ``client`` is a boto3 ``ecr`` client (injected: tests and callers choose the endpoint);
    ``registry_id`` the account whose registry this is (None: the caller's own).
    """

    reclaim = RECLAIM

    def __init__(self, client: Any, *, registry_id: str | None = None) -> None:
        self.client = client
        self.registry_id = registry_id
        endpoint = str(getattr(getattr(client, "meta", None), "endpoint_url", "") or "")
        region = str(getattr(getattr(client, "meta", None), "region_name", "") or "")
        self.base_url = f"ecr://{registry_id or 'self'}@{region}" + (
            f" ({endpoint})" if endpoint else "")
        self._endpoint = endpoint

    @classmethod
    def from_config(cls, config: Config, *, session: Any = None) -> EcrRegistry:
        """A registry from ``registry.region``, ``registry.registry_id`` and
        ``registry.endpoint_url``, with boto3's default credential chain."""
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError as exc:  # pragma: no cover - boto3 is a dependency
            raise ConfigError("registry.kind = \"ecr\" needs boto3 (pip install boto3)",
                              setting="registry.kind") from exc
        timeout = config["registry.timeout"].total_seconds()
        boto_config = BotoConfig(
            user_agent_extra=f"tagwarden/{__version__}",
            connect_timeout=timeout, read_timeout=timeout,
            max_pool_connections=config["registry.concurrency"],
            retries={"mode": "standard", "max_attempts": 4},
        )
        session = session or boto3.session.Session()
        region = config["registry.region"] or session.region_name
        if not region:
            raise ConfigError(
                "registry.region is not set and the AWS SDK's default chain names no region "
                "(set registry.region, AWS_REGION or a profile's region)",
                setting="registry.region")
        client = session.client("ecr", region_name=region,
                                endpoint_url=config["registry.endpoint_url"],
                                verify=config["registry.verify_tls"], config=boto_config)
        return cls(client, registry_id=config["registry.registry_id"])

    # -- calls -----------------------------------------------------------------------------------

    def observe(self, record: Callable[[str, str, int | str], None]) -> None:
        """Tell ``record(operation, where, status)`` of every API call (the executor's audit
        trail of calls); ``status`` is the HTTP status or the exception's name."""
        where = self.base_url

        def after(http_response: Any = None, model: Any = None, **_: Any) -> None:
            status = getattr(http_response, "status_code", None)
            record(getattr(model, "name", "?"), where, status if status is not None else "?")

        def failed(exception: Any = None, model: Any = None, **_: Any) -> None:
            if exception is not None:
                record(getattr(model, "name", "?"), where, type(exception).__name__)

        self.client.meta.events.register("after-call.ecr", after)
        self.client.meta.events.register("after-call-error.ecr", failed)

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if self.registry_id:
            kwargs["registryId"] = self.registry_id
        try:
            return getattr(self.client, operation)(**kwargs)  # type: ignore[no-any-return]
        except ClientError as exc:
            raise self._translate(operation, kwargs, exc) from exc
        except NoCredentialsError as exc:
            raise AuthError(f"ECR {operation}: no AWS credentials found by the default chain",
                            url=self._endpoint or None) from exc
        except BotoCoreError as exc:
            raise RegistryError(f"ECR {operation}: {exc}", url=self._endpoint or None,
                                temporary=True) from exc

    def _translate(self, operation: str, kwargs: dict[str, Any], exc: Any) -> RegistryError:
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        repo = kwargs.get("repositoryName")
        text = f"ECR {operation}" + (f" of {repo}" if repo else "") + f": {code}" + (
            f": {error['Message']}" if error.get("Message") else "")
        kind: type[RegistryError] = RegistryError
        if code in _NOT_FOUND:
            kind = NotFound
        elif code in _AUTH or status in (401, 403):
            kind = AuthError
        temporary = code in _TEMPORARY or (isinstance(status, int) and status >= 500)
        return kind(text, status=status, code=code, url=self._endpoint or None,
                    temporary=temporary, repository=repo)

    def _pages(self, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paged listing: follows ``nextToken`` to the end."""
        token: str | None = None
        while True:
            page = self._call(operation, **kwargs, **({"nextToken": token} if token else {}))
            yield from page.get(key) or []
            token = page.get("nextToken")
            if not token:
                return

    # -- reading ---------------------------------------------------------------------------------

    def repositories(self) -> list[str]:
        """Every repository's name, as ECR names them (``team/app``), sorted."""
        return sorted(r["repositoryName"] for r in self._pages(
            "describe_repositories", "repositories", maxResults=1000))

    def images(self, repository: str) -> list[EcrImage]:
        """Every image of ``repository``: tags, push time, size, last recorded pull, types."""
        return [self._image(repository, d) for d in self._pages(
            "describe_images", "imageDetails", repositoryName=repository, maxResults=1000)]

    @staticmethod
    def _image(repository: str, detail: dict[str, Any]) -> EcrImage:
        size = detail.get("imageSizeInBytes")
        return EcrImage(
            repository=repository, digest=detail["imageDigest"],
            tags=tuple(sorted(detail.get("imageTags") or ())),
            pushed_at=_when(detail.get("imagePushedAt")),
            size=int(size) if isinstance(size, int | float) else None,
            last_pull=_when(detail.get("lastRecordedPullTime")),
            media_type=detail.get("imageManifestMediaType"),
            artifact_media_type=detail.get("artifactMediaType"),
        )

    def list_tags(self, repository: str) -> list[str]:
        return sorted({t for image in self.images(repository) for t in image.tags})

    def describe(self, repository: str, ref: str) -> EcrImage | None:
        """The image a tag or digest names now, without reading its manifest (so without
        moving its ``lastRecordedPullTime``); None when there is none."""
        image_id = {"imageDigest": ref} if ":" in ref else {"imageTag": ref}
        try:
            page = self._call("describe_images", repositoryName=repository,
                              imageIds=[image_id])
        except NotFound:
            return None
        details = page.get("imageDetails") or []
        return self._image(repository, details[0]) if details else None

    def head_manifest(self, repository: str, ref: str) -> str | None:
        """The digest ``ref`` (tag or digest) names now, or None when ECR has no such image."""
        image = self.describe(repository, ref)
        return image.digest if image is not None else None

    def resolve(self, repository: str, tag: str) -> str:
        """The digest a tag names now; :class:`NotFound` when the tag does not exist."""
        digest = self.head_manifest(repository, tag)
        if digest is None:
            raise NotFound(f"ECR has no tag {repository}:{tag}", code="ImageNotFound",
                           url=self._endpoint or None, repository=repository, tag=tag)
        return digest

    def manifests(self, repository: str, refs: Iterable[str]) -> dict[str, Manifest]:
        """The manifests ``refs`` (digests or tags) name, keyed by the ref asked for; refs ECR
        does not have are left out. Each body is checked against its digest."""
        wanted = list(dict.fromkeys(refs))
        found: dict[str, Manifest] = {}
        for start in range(0, len(wanted), BATCH_LIMIT):
            chunk = wanted[start:start + BATCH_LIMIT]
            ids = [{"imageDigest": r} if ":" in r else {"imageTag": r} for r in chunk]
            answer = self._call("batch_get_image", repositoryName=repository, imageIds=ids,
                                acceptedMediaTypes=list(ACCEPTED_MEDIA_TYPES))
            for image in answer.get("images") or []:
                manifest = self._manifest(repository, image)
                image_id = image.get("imageId") or {}
                for key in (image_id.get("imageDigest"), image_id.get("imageTag")):
                    if key in chunk:
                        found[key] = manifest
            for failure in answer.get("failures") or []:
                code = failure.get("failureCode")
                if code not in ("ImageNotFound", "ImageTagDoesNotMatchDigest"):
                    image_id = failure.get("imageId") or {}
                    raise RegistryError(
                        f"ECR batch_get_image of {repository}: {code}: "
                        f"{failure.get('failureReason')}", code=code,
                        url=self._endpoint or None, repository=repository,
                        ref=image_id.get("imageDigest") or image_id.get("imageTag"),
                        temporary=code in _TEMPORARY)
        return found

    def _manifest(self, repository: str, image: dict[str, Any]) -> Manifest:
        body = str(image.get("imageManifest") or "").encode()
        claimed = (image.get("imageId") or {}).get("imageDigest")
        actual = digest_of(body)
        if claimed and actual != claimed:
            raise DigestMismatch(f"manifest of {repository}@{claimed} hashes to {actual}",
                                 url=self._endpoint or None, expected=claimed, actual=actual)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RegistryError(f"manifest of {repository}@{actual} is not JSON",
                                url=self._endpoint or None) from exc
        if not isinstance(parsed, dict):
            raise RegistryError(f"manifest of {repository}@{actual} is not a JSON object",
                                url=self._endpoint or None)
        media_type = mt.normalize(image.get("imageManifestMediaType")) or str(
            parsed.get("mediaType") or mt.OCI_MANIFEST)
        return Manifest(digest=actual, media_type=media_type, body=body, parsed=parsed)

    def get_manifest(self, repository: str, ref: str) -> Manifest:
        """One manifest by tag or digest; :class:`NotFound` when ECR has no such image."""
        found = self.manifests(repository, [ref]).get(ref)
        if found is None:
            raise NotFound(f"ECR has no image {repository}{'@' if ':' in ref else ':'}{ref}",
                           code="ImageNotFound", url=self._endpoint or None,
                           repository=repository, ref=ref)
        return found

    # -- deleting --------------------------------------------------------------------------------

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete one image by digest (with all its tags). :class:`NotFound` when it is
        already gone, :class:`DeleteOrderError` when an index still lists it."""
        report = self._delete_batch(repository, [digest], DeleteReport(repository))
        if report.already_gone:
            raise NotFound(f"ECR has no image {repository}@{digest}", code="ImageNotFound",
                           url=self._endpoint or None, repository=repository, digest=digest)
        report.raise_for_failures()

    def delete_many(self, repository: str, digests: Sequence[str], *,
                    known: dict[str, Manifest] | None = None) -> DeleteReport:
        """Delete images by digest, in the order ECR accepts (:func:`deletion_waves`: an index
        before its children, a subject before its referrers), at most 100 per call.

        ``known``: manifests the caller already has (the store's); the others among
        ``digests`` are read with ``batch_get_image`` to learn what lists what. Refused ids are
        in the report's ``failures``, not raised; ids already gone are in ``already_gone``.
        """
        known = dict(known or {})
        missing = [d for d in dict.fromkeys(digests) if d not in known]
        if missing:
            known.update(self.manifests(repository, missing))
        report = DeleteReport(repository)
        for wave in deletion_waves(digests, known):
            for start in range(0, len(wave), BATCH_LIMIT):
                self._delete_batch(repository, wave[start:start + BATCH_LIMIT], report)
        return report

    def _delete_batch(self, repository: str, digests: list[str],
                      report: DeleteReport) -> DeleteReport:
        answer = self._call("batch_delete_image", repositoryName=repository,
                            imageIds=[{"imageDigest": d} for d in digests])
        report.calls += 1
        deleted = {i.get("imageDigest") for i in answer.get("imageIds") or []}
        failed: dict[str, DeleteFailure] = {}
        for failure in answer.get("failures") or []:
            digest = (failure.get("imageId") or {}).get("imageDigest")
            if digest:
                failed[digest] = DeleteFailure(digest, str(failure.get("failureCode") or ""),
                                               str(failure.get("failureReason") or ""))
        for digest in digests:
            if digest in failed and failed[digest].code == "ImageNotFound":
                report.already_gone.append(digest)  # deleted by other hands: what we wanted
            elif digest in failed:
                report.failures.append(failed[digest])
            elif digest in deleted:
                report.deleted.append(digest)
            else:
                report.failures.append(DeleteFailure(
                    digest, "NotReported", "ECR's answer named neither a deletion nor a failure"))
        return report

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> EcrRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
