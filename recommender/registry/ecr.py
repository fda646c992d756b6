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

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from .. import __version__
from ..errors import AuthError, ConfigError, DigestMismatch, NotFound, RegistryError, Unsupported
from . import mediatypes as mt
from .models import COSIGN_SUFFIXES, Manifest, Referrer, artifact_kind, digest_of
from .protocol import CallRecorder, Deleted, ImageRecord, Reclaim, ReclaimHint

if TYPE_CHECKING:
    from ..config import Config
    from .factory import Options

__all__ = [
    "BATCH_LIMIT",
    "RECLAIM",
    "DeleteFailure",
    "DeleteOrderError",
    "DeleteReport",
    "EcrRegistry",
    "deletion_waves",
    "open_registry",
]

BATCH_LIMIT = 100  # ids per batch_get_image / batch_delete_image call (ECR's limit)
RECLAIM = ReclaimHint(Reclaim.IMMEDIATE, "ECR frees a deleted image's storage at once: "
                      "there is no garbage-collection step to run.")
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
    """One ECR registry (an account in a region) through a boto3 ECR client: a
    :class:`~.protocol.Registry`.

    ``client`` is a boto3 ``ecr`` client (injected: tests and callers choose the endpoint);
    ``registry_id`` the account whose registry this is (None: the caller's own);
    ``recorder`` receives every API call (the executor's audit).
    """

    def __init__(self, client: Any, *, registry_id: str | None = None,
                 recorder: CallRecorder | None = None) -> None:
        self.client = client
        self.registry_id = registry_id
        self.recorder = recorder
        meta = getattr(client, "meta", None)
        self._endpoint = str(getattr(meta, "endpoint_url", "") or "")
        self._region = str(getattr(meta, "region_name", "") or "")
        mapping = getattr(meta, "method_to_api_mapping", None)  # batch_get_image -> BatchGetImage
        self._actions: dict[str, str] = dict(mapping) if isinstance(mapping, dict) else {}

    @property
    def location(self) -> str:
        where = f"ecr://{self.registry_id or 'caller'}@{self._region}"
        return where if not self._endpoint else f"{where} via {self._endpoint}"

    @property
    def reclaim(self) -> ReclaimHint:
        return RECLAIM

    @classmethod
    def from_config(cls, config: Config, *, session: Any = None,
                    recorder: CallRecorder | None = None, endpoint_url: str | None = None,
                    max_connections: int | None = None) -> EcrRegistry:
        """A registry from ``registry.region``, ``registry.registry_id`` and
        ``registry.endpoint_url`` (or ``endpoint_url``), with boto3's default credential
        chain (environment, profile, web identity)."""
        import boto3
        from botocore.config import Config as BotoConfig

        timeout = config["registry.timeout"].total_seconds()
        boto_config = BotoConfig(
            user_agent_extra=f"tagwarden/{__version__}",
            connect_timeout=timeout, read_timeout=timeout,
            max_pool_connections=max_connections or config["registry.concurrency"],
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
                                endpoint_url=endpoint_url or config["registry.endpoint_url"],
                                verify=config["registry.verify_tls"], config=boto_config)
        return cls(client, registry_id=config["registry.registry_id"], recorder=recorder)

    # -- calls -----------------------------------------------------------------------------------

    def _record(self, operation: str, repo: str | None, status: int | str) -> None:
        if self.recorder is not None:
            action = self._actions.get(operation, operation)
            self.recorder.record(action, f"ecr:{repo}" if repo else "ecr:", status)

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if self.registry_id:
            kwargs["registryId"] = self.registry_id
        repo = kwargs.get("repositoryName")
        try:
            answer: dict[str, Any] = getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            error = self._translate(operation, kwargs, exc)
            self._record(operation, repo, error.status or error.code or "error")
            raise error from exc
        except NoCredentialsError as exc:
            self._record(operation, repo, type(exc).__name__)
            raise AuthError(f"ECR {operation}: no AWS credentials found by the default chain",
                            url=self._endpoint or None) from exc
        except BotoCoreError as exc:
            self._record(operation, repo, type(exc).__name__)
            raise RegistryError(f"ECR {operation}: {exc}", url=self._endpoint or None,
                                temporary=True) from exc
        failures = answer.get("failures") or []
        status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode") or "ok"
        self._record(operation, repo, failures[0].get("failureCode") or status
                     if failures else status)
        return answer

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

    def list_images(self, repo: str) -> list[ImageRecord]:
        """Every image of ``repo`` (untagged index children too): tags, push time, size,
        ``lastRecordedPullTime``, media types, from ``describe_images``."""
        return [_record_of(d) for d in self._pages(
            "describe_images", "imageDetails", repositoryName=repo, maxResults=1000)]

    def list_tags(self, repo: str) -> list[str]:
        return sorted({t for image in self.list_images(repo) for t in image.tags})

    def describe(self, repo: str, ref: str) -> ImageRecord | None:
        """The image a tag or digest names now, without reading its manifest (so without
        moving its ``lastRecordedPullTime``); None when there is none."""
        image_id = {"imageDigest": ref} if ":" in ref else {"imageTag": ref}
        try:
            page = self._call("describe_images", repositoryName=repo, imageIds=[image_id])
        except NotFound:
            return None
        details = page.get("imageDetails") or []
        return _record_of(details[0]) if details else None

    def head_manifest(self, repo: str, ref: str) -> str | None:
        image = self.describe(repo, ref)
        return image.digest if image is not None else None

    def resolve(self, repo: str, tag: str) -> str:
        digest = self.head_manifest(repo, tag)
        if digest is None:
            raise NotFound(f"ECR has no tag {repo}:{tag}", code="ImageNotFound",
                           url=self._endpoint or None, repository=repo, tag=tag)
        return digest

    def manifests(self, repo: str, refs: Iterable[str]) -> dict[str, Manifest]:
        """The manifests ``refs`` (digests or tags) name, keyed by the ref asked for, at most
        100 per ``batch_get_image``; refs ECR does not have are left out. Each body is checked
        against its digest."""
        wanted = list(dict.fromkeys(refs))
        found: dict[str, Manifest] = {}
        for start in range(0, len(wanted), BATCH_LIMIT):
            chunk = wanted[start:start + BATCH_LIMIT]
            ids = [{"imageDigest": r} if ":" in r else {"imageTag": r} for r in chunk]
            answer = self._call("batch_get_image", repositoryName=repo, imageIds=ids,
                                acceptedMediaTypes=list(ACCEPTED_MEDIA_TYPES))
            for image in answer.get("images") or []:
                manifest = self._manifest(repo, image)
                image_id = image.get("imageId") or {}
                for key in (image_id.get("imageDigest"), image_id.get("imageTag")):
                    if key in chunk:
                        found[key] = manifest
            for failure in answer.get("failures") or []:
                code = failure.get("failureCode")
                if code not in ("ImageNotFound", "ImageTagDoesNotMatchDigest"):
                    image_id = failure.get("imageId") or {}
                    raise RegistryError(
                        f"ECR batch_get_image of {repo}: {code}: {failure.get('failureReason')}",
                        code=code, url=self._endpoint or None, repository=repo,
                        ref=image_id.get("imageDigest") or image_id.get("imageTag"),
                        temporary=code in _TEMPORARY)
        return found

    def _manifest(self, repo: str, image: dict[str, Any]) -> Manifest:
        body = str(image.get("imageManifest") or "").encode()
        claimed = (image.get("imageId") or {}).get("imageDigest")
        actual = digest_of(body)
        if claimed and actual != claimed:
            raise DigestMismatch(f"manifest of {repo}@{claimed} hashes to {actual}",
                                 url=self._endpoint or None, expected=claimed, actual=actual)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RegistryError(f"manifest of {repo}@{actual} is not JSON",
                                url=self._endpoint or None) from exc
        if not isinstance(parsed, dict):
            raise RegistryError(f"manifest of {repo}@{actual} is not a JSON object",
                                url=self._endpoint or None)
        media_type = mt.normalize(image.get("imageManifestMediaType")) or str(
            parsed.get("mediaType") or mt.OCI_MANIFEST)
        return Manifest(digest=actual, media_type=media_type, body=body, parsed=parsed)

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        found = self.manifests(repo, [ref]).get(ref)
        if found is None:
            raise NotFound(f"ECR has no image {repo}{'@' if ':' in ref else ':'}{ref}",
                           code="ImageNotFound", url=self._endpoint or None,
                           repository=repo, ref=ref)
        return found

    def get_blob(self, repo: str, digest: str) -> bytes:
        # ECR's API hands a blob out only as a pre-signed download URL; a scan learns what a
        # config would say (push time) from describe_images instead.
        raise Unsupported(f"ECR's API does not serve blobs ({repo}@{digest})",
                          code="UNSUPPORTED", url=self._endpoint or None, repository=repo,
                          digest=digest)

    def blob_size(self, repo: str, digest: str) -> int | None:
        raise Unsupported(f"ECR's API does not report blob sizes ({repo}@{digest})",
                          code="UNSUPPORTED", url=self._endpoint or None, repository=repo,
                          digest=digest)

    def referrers(self, repo: str, digest: str) -> list[Referrer]:
        """Images whose ``subject`` is ``digest`` and cosign's ``sha256-<hex>.*`` tags: ECR's
        API has no referrers call, so the untagged and cosign-tagged images are read."""
        images = self.list_images(repo)
        prefix = digest.replace(":", "-", 1)
        cosign = {i.digest: t for i in images for t in i.tags if t.startswith(prefix + ".")}
        candidates = [i.digest for i in images if (not i.tags or i.digest in cosign)
                      and not mt.is_index(i.media_type)]
        found: list[Referrer] = []
        for candidate, manifest in self.manifests(repo, candidates).items():
            if manifest.subject == digest:
                found.append(Referrer(candidate, artifact_kind(manifest.artifact_type),
                                      manifest.media_type, manifest.artifact_type))
            elif candidate in cosign:
                suffix = cosign[candidate][len(prefix):]
                found.append(Referrer(candidate, COSIGN_SUFFIXES.get(suffix, "other"),
                                      manifest.media_type, manifest.artifact_type,
                                      cosign[candidate]))
        return found

    # -- deleting --------------------------------------------------------------------------------

    def delete_manifest(self, repo: str, digest: str) -> None:
        """Delete one image by digest (with all its tags). :class:`NotFound` when it is
        already gone, :class:`DeleteOrderError` when an index still lists it."""
        report = self._delete_batch(repo, [digest], DeleteReport(repo))
        if report.already_gone:
            raise NotFound(f"ECR has no image {repo}@{digest}", code="ImageNotFound",
                           url=self._endpoint or None, repository=repo, digest=digest)
        report.raise_for_failures()

    def delete_many(self, repo: str, digests: Sequence[str]) -> list[Deleted]:
        """Delete images by digest, one :class:`~.protocol.Deleted` per digest in the order
        given. The calls go in waves (:func:`deletion_waves`), so an index already goes before
        the children it lists even when the caller did not order them, at most 100 per call."""
        report = self.delete_report(repo, digests)
        failures = {f.digest: f for f in report.failures}
        outcomes: list[Deleted] = []
        for digest in dict.fromkeys(digests):
            if digest in failures:
                outcomes.append(Deleted(digest, "failed",
                                        _delete_error(repo, failures[digest])))
            elif digest in report.already_gone:
                outcomes.append(Deleted(digest, "gone"))
            else:
                outcomes.append(Deleted(digest, "deleted"))
        return outcomes

    def delete_report(self, repo: str, digests: Sequence[str], *,
                      known: dict[str, Manifest] | None = None) -> DeleteReport:
        """:meth:`delete_many` with ECR's own words: a :class:`DeleteReport`. ``known``:
        manifests the caller already has; the others are read to learn what lists what."""
        known = dict(known or {})
        missing = [d for d in dict.fromkeys(digests) if d not in known]
        if missing:
            known.update(self.manifests(repo, missing))
        report = DeleteReport(repo)
        for wave in deletion_waves(digests, known):
            for start in range(0, len(wave), BATCH_LIMIT):
                self._delete_batch(repo, wave[start:start + BATCH_LIMIT], report)
        return report

    def _delete_batch(self, repo: str, digests: list[str], report: DeleteReport) -> DeleteReport:
        answer = self._call("batch_delete_image", repositoryName=repo,
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

    def untag(self, repo: str, tag: str) -> None:
        """Remove ``tag`` alone. ECR deletes an image with its last tag, so an image this is
        the only tag of is refused (:class:`Unsupported`)."""
        image = self.describe(repo, tag)
        if image is None:
            raise NotFound(f"ECR has no tag {repo}:{tag}", code="ImageNotFound",
                           url=self._endpoint or None, repository=repo, tag=tag)
        if set(image.tags) <= {tag}:
            raise Unsupported(f"{repo}:{tag} is the last tag of {image.digest}: ECR would "
                              "delete the image with it", code="UNSUPPORTED",
                              url=self._endpoint or None, repository=repo, tag=tag)
        answer = self._call("batch_delete_image", repositoryName=repo,
                            imageIds=[{"imageTag": tag, "imageDigest": image.digest}])
        for failure in answer.get("failures") or []:
            code = str(failure.get("failureCode") or "")
            kind = NotFound if code == "ImageNotFound" else RegistryError
            raise kind(f"ECR refused to untag {repo}:{tag}: {code}", code=code,
                       url=self._endpoint or None, repository=repo, tag=tag)

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> EcrRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _record_of(detail: dict[str, Any]) -> ImageRecord:
    size = detail.get("imageSizeInBytes")
    return ImageRecord(
        digest=detail["imageDigest"], tags=tuple(sorted(detail.get("imageTags") or ())),
        media_type=detail.get("imageManifestMediaType"),
        size=int(size) if isinstance(size, int | float) else None,
        pushed_at=_when(detail.get("imagePushedAt")),
        last_pulled_at=_when(detail.get("lastRecordedPullTime")),
        artifact_media_type=detail.get("artifactMediaType"),
    )


def open_registry(config: Config, options: Options) -> EcrRegistry:
    """The factory's entry (``registry.kind = "ecr"``): credentials from boto3's default chain;
    ``options.url``, when given, is the API's endpoint URL."""
    if options.credentials is not None and any(options.credentials):
        raise ConfigError("registry.kind = \"ecr\" takes its credentials from the AWS SDK's "
                          "default chain (environment, profile, web identity), not a user "
                          "and password", setting="registry.username")
    return EcrRegistry.from_config(config, recorder=options.recorder, endpoint_url=options.url,
                                   max_connections=options.max_connections)
