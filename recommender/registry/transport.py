"""An ``httpx`` transport on the standard library's ``http.client``: the registry client's
default way onto the wire.

Why: a scan is bound by the client's CPU (``bench/README.md``, "Registry scan"). Measured on
this project's machine, one GET through httpx's own transport (httpcore + h11) costs ~0.5 ms
of CPU; the same GET through ``http.client`` (whose status line and header parsing is largely C)
~0.2 ms. httpx stays the client: auth flows (``auth.py``), redirects, headers and the
``httpx`` exceptions the retry logic catches are unchanged; only the bytes on the wire go
through this module.

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
import contextlib
import http.client
import os
import select
import ssl
import threading
import urllib.request
from collections import defaultdict
from typing import Any

import httpx

__all__ = ["AsyncStdlibTransport", "StdlibTransport", "default_transport", "uses_proxy"]

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


class AsyncStdlibTransport(httpx.AsyncBaseTransport):
    """The same HTTP/1.1 exchange on asyncio streams, for the scan (no worker threads).

    Why: handing each request from the event loop to a worker thread and back cost the scan
    more CPU than the request itself (measured: ~0.6 ms per manifest GET through
    :class:`StdlibTransport` in 8 threads behind asyncio, ~0.4 ms sequentially). One thread
    driving every connection has no hand-off and no contention for the GIL.

    Same contract as :class:`StdlibTransport` (pool per origin, bounded; ``verify``; httpx's
    exceptions; a stale kept-alive connection retried once for idempotent methods), with one
    simplification: the read timeout bounds the whole response, not each read (the scan's
    responses are manifests and config blobs, a few KiB).
    """

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
        self._context: ssl.SSLContext | None = None
        self._max_connections = max_connections
        self._slots: asyncio.Semaphore | None = None  # made inside the running loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._max_idle = max_connections if max_keepalive is None else max_keepalive
        self._idle: dict[_Origin, list[_Stream]] = defaultdict(list)
        self.connections_opened = 0

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Stream:
        scheme, host, port = origin
        context = None
        if scheme == "https":
            if self._context is None:
                self._context = _ssl_context(self._verify)
            context = self._context
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, ssl=context,
                                                               limit=_HEAD_LIMIT)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port}: timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"connecting to {host}:{port}: {exc}") from exc
        self.connections_opened += 1
        return reader, writer

    def _checkout(self, origin: _Origin) -> _Stream | None:
        idle = self._idle.get(origin)
        while idle:
            reader, writer = idle.pop()
            # The loop has already processed a close or stray bytes that arrived while idle.
            if reader.at_eof() or writer.is_closing() or reader._buffer:  # type: ignore[attr-defined]
                writer.close()
                continue
            return reader, writer
        return None

    def _checkin(self, origin: _Origin, stream: _Stream) -> None:
        if sum(map(len, self._idle.values())) < self._max_idle:
            self._idle[origin].append(stream)
        else:
            stream[1].close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        origin = (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        raw = request.headers.raw
        head = b"".join([
            request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n",
            *(b"%s: %s\r\n" % pair for pair in raw), b"\r\n",
        ])
        # One CR and one LF per line, no more: a header value carrying a line break (a token
        # from a hostile token endpoint) must not add headers or requests of its own.
        if head.count(b"\n") != len(raw) + 2 or head.count(b"\r") != len(raw) + 2:
            raise httpx.LocalProtocolError("a request header holds a line break")
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._slots is None:
            # First use, or a new event loop: connections and the semaphore belong to the
            # loop that made them. Connections a closed loop left idle cannot be closed any
            # more (asyncio closes through the loop); :meth:`aclose` before a loop ends.
            for _reader, writer in (s for streams in self._idle.values() for s in streams):
                with contextlib.suppress(RuntimeError):  # "Event loop is closed"
                    writer.transport.abort()
            self._idle.clear()
            self._loop, self._slots = loop, asyncio.Semaphore(self._max_connections)
        if self._slots.locked():  # a timer only when we may have to wait (CPU per request)
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise httpx.PoolTimeout("no free connection in the pool") from exc
        else:
            await self._slots.acquire()
        try:
            stream = self._checkout(origin)
            reused = stream is not None
            while True:
                if stream is None:
                    stream = await self._connect(origin, timeouts.get("connect"))
                try:
                    answer = await _exchange_async(stream, request.method, head + body,
                                                   timeouts)
                except _Stale as exc:
                    stream[1].close()
                    stream = None
                    if reused and request.method in _IDEMPOTENT:
                        reused = False
                        continue
                    raise httpx.RemoteProtocolError(
                        f"server closed the connection without answering: {exc}") from exc
                except BaseException:
                    stream[1].close()
                    raise
                break
            status, headers, content, reason, keep = answer
            if keep:
                self._checkin(origin, stream)
            else:
                stream[1].close()
        finally:
            self._slots.release()
        return httpx.Response(
            status, headers=headers, stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def aclose(self) -> None:
        """Close the idle connections. The transport stays usable (new connections)."""
        idle = [s for streams in self._idle.values() for s in streams]
        self._idle.clear()
        for _reader, writer in idle:
            writer.close()


_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_HEAD_LIMIT = 1 << 16  # a status line and headers longer than 64 KiB are refused
_NO_BODY = frozenset({204, 304})


class _Stale(Exception):
    """The connection ended before the first byte of a response."""


async def _exchange_async(
    stream: _Stream, method: str, data: bytes, timeouts: dict[str, float | None]
) -> tuple[int, list[tuple[bytes, bytes]], bytes, bytes, bool]:
    reader, writer = stream
    try:
        writer.write(data)
        if writer.transport.get_write_buffer_size():  # not all sent at once: wait for it
            async with asyncio.timeout(timeouts.get("write")):
                await writer.drain()
    except TimeoutError as exc:
        raise httpx.WriteTimeout("sending the request: timed out") from exc
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise _Stale(str(exc)) from exc
    except OSError as exc:
        raise httpx.WriteError(f"sending the request: {exc}") from exc
    try:
        async with asyncio.timeout(timeouts.get("read")):
            return await _read_response(reader, method)
    except TimeoutError as exc:
        raise httpx.ReadTimeout("reading the response: timed out") from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx.RemoteProtocolError("response headers longer than 64 KiB") from exc
    except (ValueError, asyncio.IncompleteReadError) as exc:
        raise httpx.RemoteProtocolError(f"malformed or cut-short response: {exc}") from exc
    except _Stale:
        raise
    except OSError as exc:
        raise httpx.ReadError(f"reading the response: {exc}") from exc


async def _read_response(
    reader: asyncio.StreamReader, method: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes, bytes, bool]:
    first = True
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if first and not exc.partial:
                raise _Stale("closed before the status line") from exc
            raise
        except ConnectionResetError as exc:
            if first:
                raise _Stale(str(exc)) from exc
            raise
        first = False
        lines = head[:-4].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(code)
        if 100 <= status < 200 and status != 101:
            continue  # 100 Continue and friends: the real answer follows
        break
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    connection = b""
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ValueError(f"malformed header line {line[:80]!r}")
        value = value.strip()
        headers.append((name, value))
        lower = name.lower()
        if lower == b"content-length":
            length = int(value)
            if length < 0:
                raise ValueError("negative Content-Length")
        elif lower == b"transfer-encoding":
            chunked = value.lower().endswith(b"chunked")
        elif lower == b"connection":
            connection = value.lower()
    keep = (b"close" not in connection if version == b"HTTP/1.1"
            else b"keep-alive" in connection)
    if method == "HEAD" or status in _NO_BODY:
        content = b""
    elif chunked:
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, ignored
                    pass
                break
            parts.append((await reader.readexactly(size + 2))[:-2])
        content = b"".join(parts)
    elif length is not None:
        content = await reader.readexactly(length)
    else:
        content = await reader.read()  # delimited by the server closing
        keep = False
    return status, headers, content, reason, keep
