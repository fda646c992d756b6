"""The Distribution API's operations, written once: each a generator that yields a
:class:`Call` and receives its response, so the synchronous client (``sync.py``) and the
asyncio one (``aio.py``) share every protocol detail and differ only in how they send.
:class:`ClientBase` holds what both clients share: the base URL, the retry decision."""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode, urljoin

import httpx
import orjson

from .. import __version__
from ..errors import DigestMismatch, RegistryError, Unsupported
from . import mediatypes as mt
from .auth import RegistryAuth
from .errors import error_from, redact_url, retry_after
from .models import COSIGN_SUFFIXES, Manifest, Referrer, artifact_kind, digest_of
from .protocol import Reclaim, ReclaimHint

__all__ = ["USER_AGENT", "Call", "ClientBase", "Op", "Operations", "ping"]

T = TypeVar("T")
USER_AGENT = f"tagwarden/{__version__}"
IDEMPOTENT = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Call:
    method: str
    url: str  # a path below the base URL or an absolute URL (Link, Location headers)
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None
    content: bytes | None = None
    allow: frozenset[int] = frozenset()  # statuses handed back instead of raised


_Op = Generator[Call, httpx.Response, T]


Op = Generator[Call, httpx.Response, T]


def check_digest(body: bytes, claimed: str | None, response: httpx.Response, what: str) -> str:
    """The body's digest, checked against ``claimed``. The redacted URL for the error is
    only worked out on failure (this runs on every manifest and blob of a scan)."""
    algorithm = (claimed or "sha256:").split(":", 1)[0]
    try:
        actual = digest_of(body, algorithm)
    except ValueError:
        url = redact_url(str(response.url))
        raise DigestMismatch(f"unknown digest algorithm in {claimed!r}", url=url) from None
    if claimed and actual != claimed:
        url = redact_url(str(response.url))
        raise DigestMismatch(
            f"{what} hashes to {actual}, not {claimed} ({url})",
            url=url, expected=claimed, actual=actual,
        )
    return actual


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The body as a JSON object, or a RegistryError naming what was expected."""
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        where = redact_url(str(response.url))
        raise RegistryError(f"{what} is not JSON ({where})", url=where) from exc
    if not isinstance(doc, dict):
        where = redact_url(str(response.url))
        raise RegistryError(f"{what} is not a JSON object ({where})", url=where)
    return doc


def _next_link(response: httpx.Response) -> str | None:
    link = response.links.get("next", {}).get("url")
    return urljoin(str(response.url), link) if link else None


class Operations:
    """The protocol, written once. Every method is a generator of :class:`Call`."""

    def _paginate(self, path: str, key: str, n: int | None) -> Op[list[str]]:
        names: list[str] = []
        call = Call("GET", path, params={"n": str(n)} if n else None)
        while True:
            response = yield call
            page = json_object(response, f"{key} list").get(key) or []
            names.extend(n for n in page if isinstance(n, str))
            next_url = _next_link(response)
            if next_url is None:
                return names
            call = Call("GET", next_url)

    def _catalog(self, n: int | None) -> Op[list[str]]:
        return (yield from self._paginate("/v2/_catalog", "repositories", n))

    def _list_tags(self, repo: str, n: int | None) -> Op[list[str]]:
        return (yield from self._paginate(f"/v2/{repo}/tags/list", "tags", n))

    def _get_manifest(self, repo: str, ref: str) -> Op[Manifest]:
        url = f"/v2/{repo}/manifests/{ref}"
        response = yield Call("GET", url, headers={"Accept": ", ".join(mt.MANIFEST_ACCEPT)})
        body = response.content
        # Two claims to check: the registry's header and, for a digest reference, our own.
        header = response.headers.get("docker-content-digest")
        digest = check_digest(body, header, response, "manifest")
        if ":" in ref:  # tags cannot hold a colon: this is a digest
            check_digest(body, ref, response, "manifest")
        parsed = json_object(response, "manifest")
        media_type = mt.normalize(response.headers.get("content-type")) or parsed.get(
            "mediaType", ""
        )
        if media_type in ("", "application/json"):
            media_type = parsed.get("mediaType") or mt.OCI_MANIFEST
        return Manifest(digest=digest, media_type=media_type, body=body, parsed=parsed)

    def _head_manifest(self, repo: str, ref: str) -> Op[str | None]:
        response = yield Call(
            "HEAD", f"/v2/{repo}/manifests/{ref}",
            headers={"Accept": ", ".join(mt.MANIFEST_ACCEPT)}, allow=frozenset({404}),
        )
        if response.status_code == 404:
            return None
        return response.headers.get("docker-content-digest")

    def _delete_manifest(self, repo: str, digest: str) -> Op[None]:
        yield Call("DELETE", f"/v2/{repo}/manifests/{digest}")

    def _untag(self, repo: str, tag: str) -> Op[None]:
        # OCI distribution-spec 1.1 lets a registry remove a tag by DELETE on the tag, and
        # one that does not answers 400 or 405 (Distribution 2 reads the tag as a bad digest).
        response = yield Call("DELETE", f"/v2/{repo}/manifests/{tag}", allow=frozenset({400}))
        if response.status_code == 400:
            raise Unsupported(f"the registry cannot remove a tag alone ({repo}:{tag})",
                              status=400, url=redact_url(str(response.url)))

    def _get_blob(self, repo: str, digest: str) -> Op[bytes]:
        response = yield Call("GET", f"/v2/{repo}/blobs/{digest}")
        check_digest(response.content, digest, response, "blob")
        return response.content

    def _blob_size(self, repo: str, digest: str) -> Op[int | None]:
        response = yield Call("HEAD", f"/v2/{repo}/blobs/{digest}", allow=frozenset({404}))
        if response.status_code == 404:
            return None
        return int(response.headers.get("content-length", "0"))

    def _push_blob(self, repo: str, data: bytes, mount_from: str | None) -> Op[str]:
        digest = digest_of(data)
        # 1. Already there (layers are shared): nothing to send.
        exists = yield Call("HEAD", f"/v2/{repo}/blobs/{digest}", allow=frozenset({404}))
        if exists.status_code == 200:
            return digest
        # 2. Start an upload, asking to mount from a sibling repository when we know one.
        params = {"mount": digest, "from": mount_from} if mount_from else None
        started = yield Call("POST", f"/v2/{repo}/blobs/uploads/", params=params)
        if started.status_code == 201:
            return digest  # mounted: no bytes moved
        location = started.headers.get("location")
        if not location:
            raise RegistryError("upload started without a Location", url=redact_url(
                str(started.url)))
        # 3. Finish it monolithically: one PUT with the bytes and the digest.
        location = urljoin(str(started.url), location)
        sep = "&" if "?" in location else "?"
        yield Call(
            "PUT", f"{location}{sep}{urlencode({'digest': digest})}", content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest

    def _put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> Op[str]:
        response = yield Call(
            "PUT", f"/v2/{repo}/manifests/{ref}", content=body,
            headers={"Content-Type": media_type},
        )
        claimed = response.headers.get("docker-content-digest")
        return check_digest(body, claimed, response, "pushed manifest")

    def _referrers(self, repo: str, digest: str) -> Op[list[Referrer]]:
        # 1. The OCI 1.1 referrers API, when the registry has it.
        response = yield Call(
            "GET", f"/v2/{repo}/referrers/{digest}", headers={"Accept": mt.OCI_INDEX},
            allow=frozenset({400, 404, 405}),
        )
        if response.status_code == 200 and mt.is_index(response.headers.get("content-type")):
            found = [d for d in json_object(response, "referrers index").get("manifests") or []
                     if isinstance(d, dict) and d.get("digest")]
            return [
                Referrer(
                    d["digest"], artifact_kind(d.get("artifactType")), d.get("mediaType"),
                    d.get("artifactType"),
                )
                for d in found
            ]
        # 2. Fallback: the tag schema ``sha256-<hex>`` and cosign's ``.sig/.att/.sbom`` tags.
        tags = yield from self._list_tags(repo, None)
        return (yield from self._referrers_from_tags(repo, digest, tags))

    def _referrers_from_tags(
        self, repo: str, digest: str, tags: Iterable[str]
    ) -> Op[list[Referrer]]:
        prefix = digest.replace(":", "-", 1)
        found: list[Referrer] = []
        for tag in sorted(t for t in tags if t.startswith(prefix)):
            suffix = tag[len(prefix):]
            if suffix == "":  # OCI referrers tag schema: an index of referrers
                index = yield from self._get_manifest(repo, tag)
                found.extend(
                    Referrer(c["digest"], artifact_kind(c.get("artifactType")), c.get("mediaType"),
                             c.get("artifactType"), tag)
                    for c in index.children
                )
            elif suffix in COSIGN_SUFFIXES:
                manifest = yield from self._get_manifest(repo, tag)
                found.append(Referrer(manifest.digest, COSIGN_SUFFIXES[suffix],
                                      manifest.media_type, manifest.artifact_type, tag))
        return found


class ClientBase(Operations):
    """What both clients share. ``reclaim``: the hint reports show after deletions (the
    backend's factory passes the configured one; the default names no command)."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None,
        timeout: float,
        user_agent: str,
        retries: int,
        backoff: float,
        reclaim: ReclaimHint | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth if auth is not None else RegistryAuth()
        self.timeout = timeout
        self.user_agent = user_agent
        self.retries = retries
        self.backoff = backoff
        self._reclaim = reclaim or ReclaimHint(
            Reclaim.OFFLINE_GC, "space returns after the registry's garbage collection")

    @property
    def location(self) -> str:
        return redact_url(self.base_url)

    @property
    def reclaim(self) -> ReclaimHint:
        return self._reclaim

    def _url(self, call: Call) -> str:
        return call.url if "://" in call.url else self.base_url + call.url

    def _outcome(
        self, call: Call, attempt: int, response: httpx.Response | None, exc: Exception | None
    ) -> tuple[RegistryError | None, float]:
        """(error to raise or retry, delay before a retry; negative = raise now)."""
        if exc is None and response is not None and (
            response.is_success or response.status_code in call.allow
        ):
            return None, -1
        url = redact_url(self._url(call))
        if exc is not None:
            error: RegistryError = RegistryError(
                f"cannot reach the registry: {type(exc).__name__} {exc} ({url})",
                url=url, temporary=True,
            )
        else:
            assert response is not None
            error = error_from(response, url)
        if not (error.temporary and call.method in IDEMPOTENT and attempt < self.retries):
            return error, -1
        delay = retry_after(response)
        if delay is None:
            delay = self.backoff * (2**attempt)
        return error, min(delay, 60.0)


def ping() -> Op[None]:
    """``GET /v2/``: is this a registry, and do our credentials work."""
    yield Call("GET", "/v2/")
