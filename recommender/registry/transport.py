"""The registry client's ways onto the wire, as ``httpx`` transports: :class:`StdlibTransport`
on the standard library's ``http.client`` (the synchronous client's default) and
:class:`AiohttpTransport` on aiohttp (the scan's, at the end of this module).

Why: a scan is bound by the client's CPU (bench/, "Registry scan"), and one GET through
``http.client`` (whose status line and header parsing is largely C) costs less than half the
CPU of one through httpx's own transport (httpcore + h11). httpx stays the client: auth flows
(``auth.py``), redirects, headers and the ``httpx`` exceptions the retry logic catches are
unchanged; only the bytes on the wire go through this module.

What it does, and what it does not:

- HTTP/1.1 only, keep-alive connections pooled per origin (scheme, host, port), at most
  ``max_connections`` in use at once (more callers wait, up to the pool timeout, then
  :class:`httpx.PoolTimeout`) and at most ``max_keepalive`` kept idle.
- HTTPS through :mod:`ssl`, honouring ``verify`` (bool, a CA bundle path, or an
  ``ssl.SSLContext``), certificates from ``certifi`` as httpx does.
- Timeouts from ``request.extensions["timeout"]`` (connect, write, read, pool).
- Socket and protocol errors become the httpx exceptions httpx's own transport raises
  (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``WriteError``, ``ReadError``,
  ``RemoteProtocolError``...), so callers' retry logic is the same.
- A kept-alive connection the server closed while idle is detected before reuse when the
  close has arrived, and otherwise an idempotent request is sent once more on a fresh
  connection if the reused one fails before any byte of a response came back (what urllib3
  does). A POST is not: the server may have acted on it before closing.
- The whole body is read before returning (every registry operation reads it); streaming
  responses are not supported, so this transport is not for multi-GiB layer downloads.
- No proxies: :func:`default_transport` falls back to httpx's transport when the environment
  names a proxy for the registry.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import select
import socket
import ssl
import threading
import urllib.request
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import aiohttp

# aiohttp is imported where the scan's transport is used, not here: every CLI command imports
# this module, and aiohttp adds memory and start-up time to each process (the file ingest has
# two and a memory cap; bench/).

__all__ = ["AiohttpTransport", "StdlibTransport", "default_transport", "uses_proxy"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Failures that mean "the server closed this connection before answering": on a reused idle
# connection they are retried once on a fresh one.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError)
# Only these are sent again (RFC 9110 9.2.2): a POST may have been acted on before the close.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})

_Origin = tuple[str, str, int]


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


def _stale(conn: http.client.HTTPConnection) -> bool:
    """True when an idle connection has something to read: the server's close (EOF) or bytes
    nobody asked for. Either way it cannot carry another request."""
    sock = conn.sock
    if sock is None:
        return True
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class StdlibTransport(httpx.BaseTransport):
    """Thread-safe pooled HTTP/1.1 transport over :mod:`http.client` (see the module doc)."""

    def __init__(
        self,
        *,
        verify: bool | str | ssl.SSLContext = True,
        max_connections: int = 20,
        max_keepalive: int | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._verify = verify
        self._context: ssl.SSLContext | None = None  # built on the first HTTPS request
        self._slots = threading.BoundedSemaphore(max_connections)
        self._max_idle = max_connections if max_keepalive is None else max_keepalive
        self._lock = threading.Lock()
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = defaultdict(list)
        self._closed = False
        self.connections_opened = 0  # how many connections were made (tests, benchmarks)

    # --- pool ----------------------------------------------------------------------------------

    def _checkout(self, origin: _Origin) -> http.client.HTTPConnection | None:
        """An idle connection to ``origin`` that still looks open, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                conn = idle.pop() if idle else None
            if conn is None or not _stale(conn):
                return conn
            conn.close()

    def _checkin(self, origin: _Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and sum(map(len, self._idle.values())) < self._max_idle:
                self._idle[origin].append(conn)
                return
        conn.close()

    def _connect(self, origin: _Origin, timeout: float | None) -> http.client.HTTPConnection:
        scheme, host, port = origin
        conn: http.client.HTTPConnection
        if scheme == "https":
            if self._context is None:
                self._context = _ssl_context(self._verify)
            conn = http.client.HTTPSConnection(host, port, timeout=timeout,
                                               context=self._context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(f"connecting to {host}:{port}: {exc}") from exc
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, DNS, TLS handshake
            conn.close()
            raise httpx.ConnectError(f"connecting to {host}:{port}: {exc}") from exc
        with self._lock:
            self.connections_opened += 1
        return conn

    # --- one exchange --------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = request.read() or None  # our requests carry bytes, never a stream
        if not self._slots.acquire(timeout=timeouts.get("pool")):
            raise httpx.PoolTimeout("no free connection in the pool")
        try:
            conn = self._checkout(origin)
            reused = conn is not None
            while True:
                if conn is None:
                    conn = self._connect(origin, timeouts.get("connect"))
                try:
                    status, headers, content, reason, keep = self._exchange(
                        conn, request, body, timeouts)
                except _STALE as exc:
                    conn.close()
                    conn = None
                    if reused and request.method in _IDEMPOTENT:  # closed while idle
                        reused = False
                        continue
                    raise _translate(exc) from exc
                except BaseException as exc:
                    conn.close()
                    if isinstance(exc, (OSError, http.client.HTTPException)):
                        raise _translate(exc) from exc
                    raise
                break
            if keep:
                self._checkin(origin, conn)
            else:
                conn.close()
        finally:
            self._slots.release()
        return httpx.Response(
            status, headers=headers, stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    @staticmethod
    def _exchange(
        conn: http.client.HTTPConnection,
        request: httpx.Request,
        body: bytes | None,
        timeouts: dict[str, float | None],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bytes, bool]:
        sock = conn.sock
        assert sock is not None
        sock.settimeout(timeouts.get("write"))
        # httpx has already set Host (and Content-Length when there is a body): send its
        # headers as they are, nothing added.
        try:
            conn.putrequest(request.method, request.url.raw_path.decode("ascii"),
                            skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                conn.putheader(name, value)
        except ValueError as exc:  # http.client refuses a line break in a header
            raise httpx.LocalProtocolError(str(exc)) from exc
        try:
            conn.endheaders(body)
        except TimeoutError as exc:
            raise httpx.WriteTimeout(f"sending the request: {exc}") from exc
        sock.settimeout(timeouts.get("read"))
        # Errors up to here (a reset, a close without a status line) may mean a stale
        # connection and are left to the caller; once the status line is in, they may not.
        response = conn.getresponse()
        length = response.msg.get("content-length")
        if length is not None and not length.strip().isdigit():
            # http.client would read such a body until the server closes; h11 refuses it.
            raise httpx.RemoteProtocolError(f"malformed Content-Length {length[:40]!r}")
        try:
            content = response.read()
        except http.client.IncompleteRead as exc:
            raise httpx.RemoteProtocolError(f"response body cut short: {exc}") from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"reading the response: {exc}") from exc
        except OSError as exc:
            raise httpx.ReadError(f"reading the response: {exc}") from exc
        headers = [(k.encode("latin-1"), v.encode("latin-1"))
                   for k, v in response.msg.items()]
        reason = response.reason.encode("latin-1", "replace")
        return response.status, headers, content, reason, not response.will_close

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [c for conns in self._idle.values() for c in conns]
            self._idle.clear()
        for conn in idle:
            conn.close()


def _translate(exc: BaseException) -> httpx.TransportError:
    """The httpx exception httpx's own transport would raise for this failure."""
    if isinstance(exc, httpx.TransportError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(text)
    if isinstance(exc, (http.client.RemoteDisconnected, http.client.HTTPException)):
        return httpx.RemoteProtocolError(text)
    if isinstance(exc, BrokenPipeError):
        return httpx.WriteError(text)
    return httpx.ReadError(text)


def uses_proxy(base_url: str) -> bool:
    """Whether the environment (``HTTPS_PROXY``, ``NO_PROXY``...) names a proxy for
    ``base_url``'s host: then httpx's own transport, which honours it, is used."""
    proxies: dict[str, Any] = urllib.request.getproxies_environment()
    proxies.pop("no", None)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return bool(proxies) and not bypass(httpx.URL(base_url).host)


def default_transport(
    base_url: str, *, verify: bool | str | ssl.SSLContext, max_connections: int
) -> httpx.BaseTransport | None:
    """The registry client's transport: :class:`StdlibTransport`, or None (httpx's own,
    which honours proxies) when the environment names a proxy for ``base_url``'s host."""
    if uses_proxy(base_url):
        return None
    return StdlibTransport(verify=verify, max_connections=max_connections)


# --- asyncio ------------------------------------------------------------------------------------


class AiohttpTransport(httpx.AsyncBaseTransport):
    """The scan's transport: aiohttp's connection pool and C HTTP parser on the event loop's own
    thread, behind httpx's request and response objects.

    Why: handing each request from the event loop to a worker thread and back cost the scan
    more CPU than the request itself (:class:`StdlibTransport` in threads behind asyncio), and
    httpx's own asyncio stack (httpcore, h11, anyio) more still. Through aiohttp a GET costs
    the least of the three (bench/, "Registry scan").

    Only the bytes on the wire go through aiohttp: the auth flow, redirects (aiohttp is told
    not to follow any), retries and default headers stay with the registry client, and
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
