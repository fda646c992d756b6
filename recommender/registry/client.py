"""The Distribution v2 client: one set of operations, driven synchronously or with asyncio.

Layers: references are parsed elsewhere (``reference.py``); auth is an
``httpx.Auth`` flow (``auth.py``); the bytes on the wire go through ``transport.py``; this
module is the client (retries with backoff honouring ``Retry-After``, a user agent, errors
translated once into :class:`RegistryError`) and the operations. Each operation is written
once as a generator that yields :class:`_Call` and receives the response, so
:class:`RegistryClient` (sync, on ``httpx.Client``: the executor and tests) and
:class:`AsyncRegistryClient` (the scan: asyncio on the event loop's thread) share every
protocol detail.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import httpx
import orjson

from .. import __version__
from ..errors import AuthError, ConfigError, DigestMismatch, NotFound, RegistryError, Unsupported
from . import mediatypes as mt
from .auth import RegistryAuth
from .transport import AiohttpTransport, default_transport, uses_proxy

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "AsyncRegistryClient",
    "Manifest",
    "Referrer",
    "RegistryClient",
    "digest_of",
    "redact_url",
    "referrer_kind",
    "retry_after",
]

T = TypeVar("T")
USER_AGENT = f"tagwarden/{__version__}"
_IDEMPOTENT = frozenset({"GET", "HEAD"})
_COSIGN_SUFFIXES = {".sig": "signature", ".att": "attestation", ".sbom": "sbom"}
# Paths the async client's fast request path takes as they are: unreserved characters and the
# path's own "/", ":" and "@", which httpx's URL parser leaves unchanged (nothing to
# percent-encode). With no "/." in them there is no dot segment to remove either.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~:@/-]*")


def digest_of(body: bytes, algorithm: str = "sha256") -> str:
    if algorithm == "sha256":  # hashlib.new looks the name up on each call
        return "sha256:" + hashlib.sha256(body).hexdigest()
    return f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"


def redact_url(url: str) -> str:
    """The URL without credentials or query values that may be secrets (upload state, tokens)."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    keep = [p for p in parts.query.split("&") if p.split("=", 1)[0] in {"n", "last"}]
    return urlunsplit((parts.scheme, host, parts.path, "&".join(keep), ""))


@dataclass(frozen=True)
class Manifest:
    """A manifest as served: its verified digest, media type, exact bytes and decoded JSON."""

    digest: str
    media_type: str
    body: bytes
    parsed: dict[str, Any] = field(repr=False)

    @property
    def is_index(self) -> bool:
        return mt.is_index(self.media_type)

    @property
    def children(self) -> list[dict[str, Any]]:
        """An index's ``manifests`` descriptors (empty for an image manifest)."""
        if not self.is_index:
            return []
        return [d for d in self.parsed.get("manifests") or []
                if isinstance(d, dict) and isinstance(d.get("digest"), str)]

    @property
    def config(self) -> dict[str, Any] | None:
        config = self.parsed.get("config")
        return config if isinstance(config, dict) else None

    @property
    def layers(self) -> list[dict[str, Any]]:
        return [d for d in self.parsed.get("layers") or [] if isinstance(d, dict)]

    @property
    def blobs(self) -> list[dict[str, Any]]:
        """Config and layer descriptors: the blobs this manifest keeps alive."""
        return ([self.config] if self.config else []) + self.layers

    @property
    def subject(self) -> str | None:
        subject = self.parsed.get("subject")
        return subject.get("digest") if isinstance(subject, dict) else None

    @property
    def artifact_type(self) -> str | None:
        value = self.parsed.get("artifactType")
        if value is None and self.config and self.config.get("mediaType") not in (
            mt.OCI_CONFIG, mt.DOCKER_CONFIG, None
        ):
            value = self.config.get("mediaType")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Referrer:
    """A manifest that refers to another: OCI ``subject`` or a cosign ``sha256-<hex>.*`` tag."""

    digest: str
    kind: str  # signature | attestation | sbom | other
    media_type: str | None = None
    artifact_type: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class _Call:
    method: str
    url: str  # a path below the base URL or an absolute URL (Link, Location headers)
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None
    content: bytes | None = None
    allow: frozenset[int] = frozenset()  # statuses handed back instead of raised


_Op = Generator[_Call, httpx.Response, T]


def _error_from(response: httpx.Response, url: str) -> RegistryError:
    """Translate an error response: status, the OCI error code of its body, a redacted URL."""
    status = response.status_code
    code = message = None
    try:
        errors = orjson.loads(response.content).get("errors") or []
        if errors:
            code, message = errors[0].get("code"), errors[0].get("message")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        pass
    text = f"registry answered {status}" + (f" {code}" if code else "") + (
        f": {message}" if message else ""
    ) + f" ({url})"
    kind: type[RegistryError] = RegistryError
    if status in (401, 403):
        kind = AuthError
    elif status == 404:
        kind = NotFound
    elif status == 405 or code == "UNSUPPORTED":
        kind = Unsupported
    temporary = status == 429 or status >= 500
    return kind(text, status=status, code=code, url=url, temporary=temporary)


def retry_after(response: httpx.Response | None) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date counted from the response's own
    ``Date`` header (the registry's clock, so a skewed local clock does not matter) or, without
    one, from now. None when absent or unreadable."""
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        date = response.headers.get("date") if response is not None else None
        sent = parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - sent)


def _check_digest(body: bytes, claimed: str | None, response: httpx.Response, what: str) -> str:
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


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
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


class _Operations:
    """The protocol, written once. Every method is a generator of :class:`_Call`."""

    def _paginate(self, path: str, key: str, n: int | None) -> _Op[list[str]]:
        names: list[str] = []
        call = _Call("GET", path, params={"n": str(n)} if n else None)
        while True:
            response = yield call
            page = _json_object(response, f"{key} list").get(key) or []
            names.extend(n for n in page if isinstance(n, str))
            next_url = _next_link(response)
            if next_url is None:
                return names
            call = _Call("GET", next_url)

    def _catalog(self, n: int | None) -> _Op[list[str]]:
        return (yield from self._paginate("/v2/_catalog", "repositories", n))

    def _list_tags(self, repo: str, n: int | None) -> _Op[list[str]]:
        return (yield from self._paginate(f"/v2/{repo}/tags/list", "tags", n))

    def _get_manifest(self, repo: str, ref: str) -> _Op[Manifest]:
        url = f"/v2/{repo}/manifests/{ref}"
        response = yield _Call("GET", url, headers={"Accept": ", ".join(mt.MANIFEST_ACCEPT)})
        body = response.content
        # Two claims to check: the registry's header and, for a digest reference, our own.
        header = response.headers.get("docker-content-digest")
        digest = _check_digest(body, header, response, "manifest")
        if ":" in ref:  # tags cannot hold a colon: this is a digest
            _check_digest(body, ref, response, "manifest")
        parsed = _json_object(response, "manifest")
        media_type = mt.normalize(response.headers.get("content-type")) or parsed.get(
            "mediaType", ""
        )
        if media_type in ("", "application/json"):
            media_type = parsed.get("mediaType") or mt.OCI_MANIFEST
        return Manifest(digest=digest, media_type=media_type, body=body, parsed=parsed)

    def _head_manifest(self, repo: str, ref: str) -> _Op[str | None]:
        response = yield _Call(
            "HEAD", f"/v2/{repo}/manifests/{ref}",
            headers={"Accept": ", ".join(mt.MANIFEST_ACCEPT)}, allow=frozenset({404}),
        )
        if response.status_code == 404:
            return None
        return response.headers.get("docker-content-digest")

    def _delete_manifest(self, repo: str, digest: str) -> _Op[None]:
        yield _Call("DELETE", f"/v2/{repo}/manifests/{digest}")

    def _get_blob(self, repo: str, digest: str) -> _Op[bytes]:
        response = yield _Call("GET", f"/v2/{repo}/blobs/{digest}")
        _check_digest(response.content, digest, response, "blob")
        return response.content

    def _blob_size(self, repo: str, digest: str) -> _Op[int | None]:
        response = yield _Call("HEAD", f"/v2/{repo}/blobs/{digest}", allow=frozenset({404}))
        if response.status_code == 404:
            return None
        return int(response.headers.get("content-length", "0"))

    def _push_blob(self, repo: str, data: bytes, mount_from: str | None) -> _Op[str]:
        digest = digest_of(data)
        # 1. Already there (layers are shared): nothing to send.
        exists = yield _Call("HEAD", f"/v2/{repo}/blobs/{digest}", allow=frozenset({404}))
        if exists.status_code == 200:
            return digest
        # 2. Start an upload, asking to mount from a sibling repository when we know one.
        params = {"mount": digest, "from": mount_from} if mount_from else None
        started = yield _Call("POST", f"/v2/{repo}/blobs/uploads/", params=params)
        if started.status_code == 201:
            return digest  # mounted: no bytes moved
        location = started.headers.get("location")
        if not location:
            raise RegistryError("upload started without a Location", url=redact_url(
                str(started.url)))
        # 3. Finish it monolithically: one PUT with the bytes and the digest.
        location = urljoin(str(started.url), location)
        sep = "&" if "?" in location else "?"
        yield _Call(
            "PUT", f"{location}{sep}{urlencode({'digest': digest})}", content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest

    def _put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> _Op[str]:
        response = yield _Call(
            "PUT", f"/v2/{repo}/manifests/{ref}", content=body,
            headers={"Content-Type": media_type},
        )
        claimed = response.headers.get("docker-content-digest")
        return _check_digest(body, claimed, response, "pushed manifest")

    def _referrers(self, repo: str, digest: str) -> _Op[list[Referrer]]:
        # 1. The OCI 1.1 referrers API, when the registry has it.
        response = yield _Call(
            "GET", f"/v2/{repo}/referrers/{digest}", headers={"Accept": mt.OCI_INDEX},
            allow=frozenset({400, 404, 405}),
        )
        if response.status_code == 200 and mt.is_index(response.headers.get("content-type")):
            found = [d for d in _json_object(response, "referrers index").get("manifests") or []
                     if isinstance(d, dict) and d.get("digest")]
            return [
                Referrer(
                    d["digest"], _kind_of(d.get("artifactType")), d.get("mediaType"),
                    d.get("artifactType"),
                )
                for d in found
            ]
        # 2. Fallback: the tag schema ``sha256-<hex>`` and cosign's ``.sig/.att/.sbom`` tags.
        tags = yield from self._list_tags(repo, None)
        return (yield from self._referrers_from_tags(repo, digest, tags))

    def _referrers_from_tags(
        self, repo: str, digest: str, tags: Iterable[str]
    ) -> _Op[list[Referrer]]:
        prefix = digest.replace(":", "-", 1)
        found: list[Referrer] = []
        for tag in sorted(t for t in tags if t.startswith(prefix)):
            suffix = tag[len(prefix):]
            if suffix == "":  # OCI referrers tag schema: an index of referrers
                index = yield from self._get_manifest(repo, tag)
                found.extend(
                    Referrer(c["digest"], _kind_of(c.get("artifactType")), c.get("mediaType"),
                             c.get("artifactType"), tag)
                    for c in index.children
                )
            elif suffix in _COSIGN_SUFFIXES:
                manifest = yield from self._get_manifest(repo, tag)
                found.append(Referrer(manifest.digest, _COSIGN_SUFFIXES[suffix],
                                      manifest.media_type, manifest.artifact_type, tag))
        return found


def _kind_of(artifact_type: str | None) -> str:
    text = (artifact_type or "").lower()
    if "signature" in text or "cosign" in text or "notary" in text:
        return "signature"
    if "sbom" in text or "spdx" in text or "cyclonedx" in text:
        return "sbom"
    if "in-toto" in text or "attestation" in text or "provenance" in text:
        return "attestation"
    return "other"


def referrer_kind(tag: str) -> tuple[str, str] | None:
    """``sha256-<hex>.sig`` → ("sha256:<hex>", "signature"); None for other tags."""
    for suffix, kind in _COSIGN_SUFFIXES.items():
        if tag.startswith("sha256-") and tag.endswith(suffix):
            hexpart = tag[len("sha256-"):-len(suffix)]
            if len(hexpart) == 64:
                return f"sha256:{hexpart}", kind
    return None


class _Base(_Operations):
    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None,
        timeout: float,
        user_agent: str,
        retries: int,
        backoff: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth if auth is not None else RegistryAuth()
        self.timeout = timeout
        self.user_agent = user_agent
        self.retries = retries
        self.backoff = backoff

    def _url(self, call: _Call) -> str:
        return call.url if "://" in call.url else self.base_url + call.url

    def _outcome(
        self, call: _Call, attempt: int, response: httpx.Response | None, exc: Exception | None
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
            error = _error_from(response, url)
        if not (error.temporary and call.method in _IDEMPOTENT and attempt < self.retries):
            return error, -1
        delay = retry_after(response)
        if delay is None:
            delay = self.backoff * (2**attempt)
        return error, min(delay, 60.0)

    @classmethod
    def from_config(cls, config: Config, *, url: str | None = None, **kwargs: Any) -> Self:
        """A client for ``registry.url`` (or ``url``) with the configured credentials,
        timeout and TLS verification."""
        base = url or config["registry.url"]
        if not base:
            raise ConfigError("registry.url is not set (or pass --registry URL)",
                              setting="registry.url")
        password = config["registry.password"]
        auth = RegistryAuth(config["registry.username"],
                            password.reveal() if password else None)
        params: dict[str, Any] = {
            "auth": auth, "timeout": config["registry.timeout"].total_seconds(),
            "verify": config["registry.verify_tls"], **kwargs,
        }
        return cls(base, **params)


class RegistryClient(_Base):
    """Synchronous client (httpx.Client). ``transport`` and ``sleep`` are injectable; without
    a ``transport``, :class:`~.transport.StdlibTransport` (httpx's own when a proxy is set)."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30,
        user_agent: str = USER_AGENT,
        retries: int = 3,
        backoff: float = 0.2,
        verify: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        max_connections: int = 20,
    ) -> None:
        super().__init__(base_url, auth=auth, timeout=timeout, user_agent=user_agent,
                         retries=retries, backoff=backoff)
        self._sleep = sleep
        if transport is None:  # http.client underneath: less CPU per request than httpcore
            transport = default_transport(base_url, verify=verify,
                                          max_connections=max_connections)
        self._http = httpx.Client(
            auth=self.auth, transport=transport, timeout=timeout, verify=verify,
            headers={"User-Agent": user_agent}, follow_redirects=True,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
        )

    def _request(self, call: _Call) -> httpx.Request:
        # build_request merges the client's defaults (User-Agent, timeout) into the request.
        return self._http.build_request(call.method, self._url(call), params=call.params,
                                        headers=call.headers, content=call.content)

    def _send(self, call: _Call) -> httpx.Response:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            exc: Exception | None = None
            try:
                response = self._http.send(self._request(call))
            except httpx.HTTPError as err:
                exc = err
            error, delay = self._outcome(call, attempt, response, exc)
            if error is None:
                assert response is not None
                return response
            if delay < 0:
                raise error from exc
            self._sleep(delay)
            attempt += 1

    def _run(self, op: _Op[T]) -> T:
        try:
            call = next(op)
            while True:
                call = op.send(self._send(call))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def ping(self) -> None:
        self._run(_ping())

    def catalog(self, *, n: int | None = None) -> list[str]:
        return self._run(self._catalog(n))

    def list_tags(self, repo: str, *, n: int | None = None) -> list[str]:
        return self._run(self._list_tags(repo, n))

    def get_manifest(self, repo: str, ref: str) -> Manifest:
        return self._run(self._get_manifest(repo, ref))

    def head_manifest(self, repo: str, ref: str) -> str | None:
        return self._run(self._head_manifest(repo, ref))

    def resolve(self, repo: str, tag: str) -> str:
        """The digest a tag names now: full Accept list, verified by hashing the body."""
        return self.get_manifest(repo, tag).digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        self._run(self._delete_manifest(repo, digest))

    def get_blob(self, repo: str, digest: str) -> bytes:
        return self._run(self._get_blob(repo, digest))

    def blob_size(self, repo: str, digest: str) -> int | None:
        return self._run(self._blob_size(repo, digest))

    def push_blob(self, repo: str, data: bytes, *, mount_from: str | None = None) -> str:
        return self._run(self._push_blob(repo, data, mount_from))

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        return self._run(self._put_manifest(repo, ref, body, media_type))

    def referrers(self, repo: str, digest: str) -> list[Referrer]:
        return self._run(self._referrers(repo, digest))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRegistryClient(_Base):
    """The same operations with an asyncio face, for scans.

    By default the requests go through :class:`~.transport.AiohttpTransport` on the event
    loop's own thread, and this class does what ``httpx.AsyncClient`` would (the auth flow,
    redirects, default headers) in a few lines: a scan is bound by the client's CPU, and
    ``httpx.AsyncClient`` or a sync client in worker threads spent several times more of it
    per request (bench/, "Registry scan"). An injected synchronous
    ``httpx.BaseTransport`` (tests) runs on a :class:`RegistryClient` in worker threads
    instead, as does a registry reached through a proxy (httpx's transport honours it); an
    injected ``httpx.AsyncBaseTransport`` is driven like the default one. At most
    ``max_connections`` requests are in flight.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        timeout: float = 30,
        user_agent: str = USER_AGENT,
        retries: int = 3,
        backoff: float = 0.2,
        verify: bool = True,
        max_connections: int = 32,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(base_url, auth=auth, timeout=timeout, user_agent=user_agent,
                         retries=retries, backoff=backoff)
        self._sleep = sleep
        if transport is None and not uses_proxy(base_url):
            transport = AiohttpTransport(verify=verify, max_connections=max_connections)
        self._sync: RegistryClient | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._transport: httpx.AsyncBaseTransport | None = None
        if isinstance(transport, httpx.AsyncBaseTransport):
            self._transport = transport
            # httpx.Client's defaults, which RegistryClient sends too
            self._headers = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate",
                             "User-Agent": user_agent}
            self._timeouts = {"connect": timeout, "read": timeout, "write": timeout,
                              "pool": timeout}
            self._base = httpx.URL(self.base_url)
            parts = getattr(self._base, "_uri_reference", None)
            # The fast path needs httpx's parsed form (a NamedTuple) and a plain base URL;
            # without either, every request goes through httpx's parser.
            self._base_parts = parts if (hasattr(parts, "_replace") and getattr(
                parts, "query", "") is None and getattr(parts, "fragment", "") is None) else None
            self._templates: dict[tuple[tuple[str, str], ...], httpx.Headers] = {}
        else:
            self._sync = RegistryClient(
                base_url, auth=self.auth, transport=transport, timeout=timeout,
                user_agent=user_agent, retries=retries, backoff=backoff, verify=verify,
                sleep=sleep, max_connections=max_connections,
            )
            self._pool = ThreadPoolExecutor(max_connections,
                                            thread_name_prefix="tagwarden-registry")

    async def _run(self, op: _Op[T]) -> T:
        if self._sync is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._sync._run, op)
        try:
            call = next(op)
            while True:
                call = op.send(await self._send(call))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _send(self, call: _Call) -> httpx.Response:
        """One call with retries, as :meth:`RegistryClient._send`."""
        attempt = 0
        while True:
            response: httpx.Response | None = None
            exc: Exception | None = None
            try:
                response = await self._authenticated(self._request(call))
            except httpx.HTTPError as err:
                exc = err
            error, delay = self._outcome(call, attempt, response, exc)
            if error is None:
                assert response is not None
                return response
            if delay < 0:
                raise error from exc
            if self._sleep is time.sleep:
                await asyncio.sleep(delay)
            else:
                self._sleep(delay)  # an injected clock (tests)
            attempt += 1

    def _request(self, call: _Call) -> httpx.Request:
        """The request for ``call``. A body-less GET or HEAD of a plain path below the base URL
        (every request of a scan) is built from parts prepared once: httpx's URL parser checks
        every character of every URL and its Headers normalise every header of every request,
        the same work each time. The result is the request
        :meth:`_slow_request` builds (tests compare them); anything else is built by it."""
        path, parts = call.url, self._base_parts
        if (parts is None or call.content is not None or call.params is not None
                or call.method not in _IDEMPOTENT or "/." in path
                or not _PLAIN_PATH.fullmatch(path)):
            return self._slow_request(call)
        key = tuple(call.headers.items())
        headers = self._templates.get(key)
        if headers is None:  # as httpx.Request orders them: Host first, then ours
            headers = self._templates[key] = httpx.Headers(
                [("Host", self._base.netloc.decode("ascii")),
                 *{**self._headers, **call.headers}.items()])
        url = httpx.URL.__new__(httpx.URL)
        url._uri_reference = parts._replace(path=parts.path.rstrip("/") + path)
        request = httpx.Request(call.method, url, headers=headers, stream=httpx.ByteStream(b""),
                                extensions={"timeout": self._timeouts})
        request.read()  # as httpx.Request(content=None) does: ``request.content`` is b""
        return request

    def _slow_request(self, call: _Call) -> httpx.Request:
        return httpx.Request(
            call.method, self._url(call), params=call.params,
            headers={**self._headers, **call.headers}, content=call.content,
            extensions={"timeout": self._timeouts},
        )

    async def _authenticated(self, request: httpx.Request) -> httpx.Response:
        """Drive the auth flow (token handshake) as ``httpx.Client`` does."""
        if type(self.auth) is RegistryAuth:
            # Ours reads only token responses, and every response here is already read
            # (:meth:`_following_redirects`): its synchronous flow does the same without an
            # async generator's three steps per request.
            sync_flow = self.auth.sync_auth_flow(request)
            try:
                outgoing = next(sync_flow)
                while True:
                    response = await self._following_redirects(outgoing)
                    try:
                        outgoing = sync_flow.send(response)
                    except StopIteration:
                        return response
            finally:
                sync_flow.close()
        flow = self.auth.async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                response = await self._following_redirects(outgoing)
                try:
                    outgoing = await flow.asend(response)
                except StopAsyncIteration:
                    return response
        finally:
            await flow.aclose()

    async def _following_redirects(self, request: httpx.Request) -> httpx.Response:
        assert self._transport is not None
        for _ in range(_MAX_REDIRECTS + 1):
            response = await self._transport.handle_async_request(request)
            response.request = request
            if isinstance(response.stream, httpx.SyncByteStream):  # ours: no await needed
                response.read()
            else:
                await response.aread()
            if not response.has_redirect_location:
                return response
            request = _redirected(request, response)
        raise httpx.TooManyRedirects(f"more than {_MAX_REDIRECTS} redirects", request=request)

    async def ping(self) -> None:
        await self._run(_ping())

    async def catalog(self, *, n: int | None = None) -> list[str]:
        return await self._run(self._catalog(n))

    async def list_tags(self, repo: str, *, n: int | None = None) -> list[str]:
        return await self._run(self._list_tags(repo, n))

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        return await self._run(self._get_manifest(repo, ref))

    async def head_manifest(self, repo: str, ref: str) -> str | None:
        return await self._run(self._head_manifest(repo, ref))

    async def get_blob(self, repo: str, digest: str) -> bytes:
        return await self._run(self._get_blob(repo, digest))

    async def blob_size(self, repo: str, digest: str) -> int | None:
        return await self._run(self._blob_size(repo, digest))

    async def push_blob(self, repo: str, data: bytes, *, mount_from: str | None = None) -> str:
        return await self._run(self._push_blob(repo, data, mount_from))

    async def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        return await self._run(self._put_manifest(repo, ref, body, media_type))

    async def referrers(self, repo: str, digest: str) -> list[Referrer]:
        return await self._run(self._referrers(repo, digest))

    async def close_idle(self) -> None:
        """Close kept-alive connections: they belong to the running event loop, so a client
        used from one ``asyncio.run`` after another calls this before each loop ends."""
        if self._transport is not None:
            await self._transport.aclose()

    async def aclose(self) -> None:
        if self._sync is not None and self._pool is not None:
            self._pool.shutdown(wait=True)
            self._sync.close()
        if self._transport is not None:
            await self._transport.aclose()

    async def __aenter__(self) -> AsyncRegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_MAX_REDIRECTS = 20  # httpx's default


def _redirected(request: httpx.Request, response: httpx.Response) -> httpx.Request:
    """The request a redirect asks for, by httpx's rules: 303 (and 301/302 after a POST)
    becomes a GET without a body; credentials are not sent to another origin (a registry's
    blob GETs redirect to object storage with a signed URL)."""
    url = request.url.join(response.headers["location"])
    method = request.method
    if (response.status_code == 303 and method != "HEAD") or (
        response.status_code in (301, 302) and method == "POST"
    ):
        method = "GET"
    drop = {"host"}
    if url.scheme != request.url.scheme or url.host != request.url.host or (
        url.port != request.url.port
    ):
        drop.add("authorization")
    content = None
    if method != request.method:
        drop |= {"content-length", "transfer-encoding", "content-type"}
    elif request.content:
        content = request.content
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in drop]
    return httpx.Request(method, url, headers=headers, content=content,
                         extensions=request.extensions)


def _ping() -> _Op[None]:
    """``GET /v2/``: is this a registry, and do our credentials work."""
    yield _Call("GET", "/v2/")
