"""The scan's way onto the wire: :class:`AiohttpTransport`, an ``httpx`` transport on aiohttp,
beneath ``httpx.AsyncClient`` (``aio.py``); and :func:`uses_proxy`, which sends a registry
behind a proxy to httpx's own transport instead.

Why: a scan is bound by the client's CPU (bench/, "Registry scan"), and aiohttp's pool and C
HTTP parser on the event loop's own thread cost less of it per request than httpx's own
asyncio stack (httpcore, h11, anyio). httpx stays the client: auth flows (``auth.py``),
redirects, headers and the ``httpx`` exceptions the retry logic catches are unchanged; only
the bytes on the wire go through this module.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import urllib.request
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import aiohttp

# aiohttp is imported where the scan's transport is used, not here: every CLI command imports
# this module, and aiohttp adds memory and start-up time to each process (the file ingest has
# two and a memory cap; bench/).

__all__ = ["AiohttpTransport", "uses_proxy"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _ssl_context(verify: bool | str | ssl.SSLContext) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        path = verify
        return (ssl.create_default_context(capath=path) if os.path.isdir(path)
                else ssl.create_default_context(cafile=path))
    try:
        import certifi  # httpx's own dependency: the same CA bundle as httpx's transport
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def uses_proxy(base_url: str) -> bool:
    """Whether the environment (``HTTPS_PROXY``, ``NO_PROXY``...) names a proxy for
    ``base_url``'s host: then httpx's own transport, which honours it, is used."""
    proxies: dict[str, Any] = urllib.request.getproxies_environment()
    proxies.pop("no", None)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return bool(proxies) and not bypass(httpx.URL(base_url).host)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """The scan's transport: aiohttp's connection pool and C HTTP parser on the event loop's own
    thread, behind httpx's request and response objects.

    Only the bytes on the wire go through aiohttp: the auth flow, redirects (aiohttp is told
    not to follow any), retries and default headers stay with httpx and the client, and
    aiohttp's own extras are off (no cookies, no decompression, no headers of its own, no
    proxies from the environment: :func:`uses_proxy` picks httpx's transport then). Failures
    become the httpx exceptions httpx's transport raises, so the retry logic is the same. At
    most ``max_connections`` requests are in flight; more wait up to the pool timeout
    (:class:`httpx.PoolTimeout`). aiohttp sends an idempotent request once more when the
    connection breaks before an answer (RFC 9112 9.3.1), never a POST.

    A session belongs to the event loop that made it: :meth:`aclose` before that loop ends;
    a later loop gets a new one.
    """

    def __init__(self, *, verify: bool | str | ssl.SSLContext = True,
                 max_connections: int = 20) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._verify = verify
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections_opened = 0  # kept-alive connections are reused (tests look)
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _socket(self, addr_info: Any) -> socket.socket:
        """aiohttp's socket factory: counts the connections opened."""
        family, kind, proto = addr_info[:3]
        self.connections_opened += 1
        return socket.socket(family=family, type=kind, proto=proto)

    def _session_here(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._slots is None or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections,
                                               ssl=_ssl_context(self._verify),
                                               socket_factory=self._socket),
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                timeout=aiohttp.ClientTimeout(total=None), trust_env=False,
            )
            self._loop, self._slots = loop, asyncio.Semaphore(self._max_connections)
        return self._session, self._slots

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp
        import yarl

        if request.url.scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {request.url.scheme!r}")
        raw = request.headers.raw
        # A header value carrying a line break (a token from a hostile token endpoint) must
        # not add headers or requests of its own; refused before anything is sent.
        if any(b"\r" in value or b"\n" in value for _, value in raw):
            raise httpx.LocalProtocolError("a request header holds a line break")
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        key = (timeouts.get("connect"), timeouts.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:  # one per distinct setting: the client sends the same each time
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=key[0], sock_read=key[1])
        session, slots = self._session_here()
        if slots.locked():  # a timer only when we may have to wait (CPU per request)
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await slots.acquire()
            except TimeoutError as exc:
                raise httpx.PoolTimeout("no free connection in the pool") from exc
        else:
            await slots.acquire()
        try:
            body = await request.aread()
            async with session.request(
                request.method, yarl.URL(str(request.url), encoded=True),
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw],
                data=body or None, allow_redirects=False, compress=None, timeout=timeout,
            ) as answer:
                content = await answer.read()
                status, headers, reason = answer.status, answer.raw_headers, answer.reason
        except aiohttp.ClientError as exc:
            raise _translate_aiohttp(exc) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"reading the response: {exc}") from exc
        finally:
            slots.release()
        return httpx.Response(
            status, headers=list(headers), stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1",
                        "reason_phrase": (reason or "").encode("latin-1")},
        )

    async def aclose(self) -> None:
        """Close the kept-alive connections. The transport stays usable (a new session)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


def _translate_aiohttp(exc: aiohttp.ClientError) -> httpx.TransportError:
    """The httpx exception httpx's own transport would raise for an aiohttp failure."""
    import aiohttp

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(text)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(text)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(text)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                        aiohttp.ClientResponseError)):
        return httpx.RemoteProtocolError(text)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(text)
    return httpx.ReadError(text)
