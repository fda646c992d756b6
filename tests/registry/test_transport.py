"""The scan's aiohttp transport beneath httpx: raw loopback sockets for what a healthy server
never does (closing an idle keep-alive connection, answering nothing, refusing)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from recommender.errors import RegistryError
from recommender.registry.aio import AsyncRegistryClient
from recommender.registry.local import free_port
from recommender.registry.transport import AiohttpTransport

pytestmark = pytest.mark.registry

Conversation = Callable[[int, socket.socket], None]


def read_request(sock: socket.socket) -> bytes:
    """One request's head (the tests send no bodies), or b"" when the client closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data


def answer(sock: socket.socket, body: bytes = b"{}", *, extra: str = "") -> None:
    sock.sendall(
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}\r\n".encode() + body
    )


class RawServer:
    """Accepts connections on loopback; ``conversation(n, sock)`` speaks on the n-th one."""

    def __init__(self, conversation: Conversation) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.conversation = conversation
        self.connections = 0
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            n = self.connections
            self.connections += 1
            threading.Thread(target=self._talk, args=(n, sock), daemon=True).start()

    def _talk(self, n: int, sock: socket.socket) -> None:
        with sock:
            self.conversation(n, sock)

    def request(self, sock: socket.socket) -> bytes:
        head = read_request(sock)
        if head:
            self.requests.append(head)
        return head

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Conversation], RawServer]]:
    servers: list[RawServer] = []

    def start(conversation: Conversation) -> RawServer:
        servers.append(RawServer(conversation))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class AsyncHttp:
    """httpx.AsyncClient over AiohttpTransport, called from sync tests: one event loop
    in a thread for the client's life (connections belong to their loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, **kwargs: object) -> None:
        self.loop = loop
        self.transport = AiohttpTransport(**kwargs)  # type: ignore[arg-type]
        self.client = self._call(self._make())

    async def _make(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport)

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return self._call(self.client.get(url, **kwargs))

    def post(self, url: str, **kwargs: object) -> httpx.Response:
        return self._call(self.client.post(url, **kwargs))

    def head(self, url: str, **kwargs: object) -> httpx.Response:
        return self._call(self.client.head(url, **kwargs))

    def close(self) -> None:
        self._call(self.client.aclose())


@pytest.fixture
def http() -> Iterator[Callable[..., AsyncHttp]]:
    """``http(**transport_kwargs)``: an httpx client on AiohttpTransport."""
    made: list[AsyncHttp] = []
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def make(**kwargs: object) -> AsyncHttp:
        made.append(AsyncHttp(loop, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_a_proxy_in_the_environment_leaves_httpx_its_own_transport(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert AsyncRegistryClient("https://registry.example")._transport is None
    monkeypatch.setenv("NO_PROXY", "registry.example")
    client = AsyncRegistryClient("https://registry.example")
    assert isinstance(client._transport, AiohttpTransport)


def test_an_idle_connection_the_server_closed_is_replaced(raw_server, http):
    def talk(n: int, sock: socket.socket) -> None:
        server.request(sock)
        answer(sock, b'{"n": %d}' % n)  # keep-alive promised, then closed at once

    server = raw_server(talk)
    client = http()
    assert client.get(f"{server.url}/v2/").json() == {"n": 0}
    time.sleep(0.1)  # the close has arrived: seen before reuse
    # A POST is never sent twice, so only the check before reuse can make this work.
    assert client.post(f"{server.url}/v2/", content=b"x").json() == {"n": 1}
    assert server.connections == 2 and len(server.requests) == 2


def test_a_request_lost_on_a_reused_connection_is_sent_again_once(raw_server, http):
    # The close races the second request: the server reads it and hangs up without a byte.
    def talk(n: int, sock: socket.socket) -> None:
        server.request(sock)
        answer(sock, b'{"n": %d}' % n)
        if n in (0, 2):
            server.request(sock)

    server = raw_server(talk)
    client = http()
    assert client.get(f"{server.url}/v2/").json() == {"n": 0}
    assert client.get(f"{server.url}/v2/").json() == {"n": 1}
    assert server.connections == 2 and len(server.requests) == 3
    other = http()
    assert other.post(f"{server.url}/v2/").json() == {"n": 2}
    with pytest.raises(httpx.RemoteProtocolError):  # a POST may have been acted on
        other.post(f"{server.url}/v2/")


def test_a_fresh_connection_closed_without_an_answer_is_a_protocol_error(raw_server, http):
    def talk(n: int, sock: socket.socket) -> None:
        server.request(sock)

    server = raw_server(talk)
    client = http()
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"{server.url}/v2/")
    # aiohttp resends an idempotent request once whenever the connection breaks before an
    # answer (RFC 9112 9.3.1).
    assert server.connections == 2


def test_a_body_cut_short_is_a_protocol_error_and_the_connection_dropped(raw_server, http):
    def talk(n: int, sock: socket.socket) -> None:
        server.request(sock)
        if n == 0:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")
        else:
            answer(sock)

    server = raw_server(talk)
    client = http()
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"{server.url}/v2/")
    assert client.get(f"{server.url}/v2/").json() == {}
    assert server.connections == 2


@pytest.mark.parametrize("answer_bytes", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
])
def test_a_malformed_answer_is_a_protocol_error(raw_server, http, answer_bytes):
    def talk(n: int, sock: socket.socket) -> None:
        server.request(sock)
        sock.sendall(answer_bytes)

    server = raw_server(talk)
    with pytest.raises(httpx.RemoteProtocolError):
        http().get(f"{server.url}/v2/")


def test_a_header_with_a_line_break_is_refused_before_sending(raw_server, http):
    server = raw_server(lambda n, sock: None)
    with pytest.raises(httpx.LocalProtocolError):
        http().get(f"{server.url}/v2/", headers={"Authorization": "Bearer t\r\nX-Evil: 1"})
    assert server.requests == []


def test_refused_connections_and_read_timeouts_map_to_httpx_errors(raw_server, http):
    client = http()
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{free_port()}/v2/")
    release = threading.Event()

    def talk(n: int, sock: socket.socket) -> None:
        server.request(sock)
        release.wait(5)

    server = raw_server(talk)
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.get(f"{server.url}/v2/", timeout=httpx.Timeout(5, read=0.3))
    assert time.monotonic() - start < 3
    release.set()
    with pytest.raises(httpx.UnsupportedProtocol):
        client.get("ftp://127.0.0.1/v2/")


def test_the_registry_client_retries_what_the_transport_reports(raw_server, client_for):
    # Two connections closed without an answer, then a real one: the client's retry logic
    # sees httpx errors from this transport exactly as from httpx's own.
    def talk(n: int, sock: socket.socket) -> None:
        if server.request(sock) and n >= 2:
            answer(sock)

    server = raw_server(talk)
    client = client_for(server.url, backoff=0, sleep=lambda s: None)
    client.ping()
    assert server.connections == 3
    down = client_for(f"http://127.0.0.1:{free_port()}", retries=1, backoff=0,
                      sleep=lambda s: None)
    with pytest.raises(RegistryError, match="cannot reach the registry: ConnectError"):
        down.ping()


def test_chunked_bodies_close_delimited_bodies_and_head(raw_server, http):
    def talk(n: int, sock: socket.socket) -> None:
        if n == 0:  # a HEAD and a chunked GET keep the connection; HTTP/1.0 ends it
            server.request(sock)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 123\r\nX-A: 1\r\nX-A: 2\r\n\r\n")
            server.request(sock)
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\n{\"a\r\n4\r\n\": 1\r\n1\r\n}\r\n0\r\n\r\n")
        server.request(sock)
        sock.sendall(b"HTTP/1.0 200 OK\r\n\r\n{\"close\": true}")  # the body ends at EOF

    server = raw_server(talk)
    client = http()
    head = client.head(f"{server.url}/x")
    assert head.headers["content-length"] == "123" and head.content == b""
    assert head.headers.get_list("x-a") == ["1", "2"]
    assert client.get(f"{server.url}/x").json() == {"a": 1}
    assert client.get(f"{server.url}/x").json() == {"close": True}
    assert client.get(f"{server.url}/x").json() == {"close": True}
    assert server.connections == 2 and len(server.requests) == 4


def test_the_pool_bounds_connections_in_use(raw_server, http):
    release = threading.Event()

    def talk(n: int, sock: socket.socket) -> None:
        server.request(sock)
        release.wait(5)
        answer(sock)

    server = raw_server(talk)
    client = http(max_connections=1)
    first = threading.Thread(target=client.get, args=(f"{server.url}/a",))
    first.start()
    while not server.requests:
        time.sleep(0.01)
    with pytest.raises(httpx.PoolTimeout):
        client.get(f"{server.url}/b", timeout=httpx.Timeout(5, pool=0.2))
    release.set()
    first.join()
    assert client.get(f"{server.url}/c").json() == {}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tls")
    key, cert = root / "key.pem", root / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return key, cert


def test_https_verifies_against_the_given_bundle_or_not_at_all(raw_server, certificate, http):
    key, cert = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def talk(n: int, sock: socket.socket) -> None:
        try:
            with context.wrap_socket(sock, server_side=True) as tls:
                while server.request(tls):
                    answer(tls, b'{"tls": true}')
        except (ssl.SSLError, OSError):
            pass  # the client refused our certificate

    server = raw_server(talk)
    url = server.url.replace("http://", "https://") + "/v2/"
    for verify in (str(cert), False):
        client = http(verify=verify)
        assert client.get(url).json() == {"tls": True}
        assert client.get(url).json() == {"tls": True}
    with pytest.raises(httpx.ConnectError):
        http().get(url)  # self-signed, not in certifi's bundle
    assert server.connections == 3
