"""Registry test support: a scriptable loopback HTTP server, registries with real auth.

The loopback server is a real HTTP server on port 0 whose answers a test scripts (a wrong
digest, a 429 with ``Retry-After``, a 405): the cases a healthy docker-registry never shows.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from recommender.registry.local import LocalRegistry, registry_binary
from recommender.registry.sync import RegistryClient
from tests.conftest import missing

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Loopback:
    url: str
    seen: list[Seen] = field(default_factory=list)


def _serve(handler: Callable[[Seen], Answer]) -> tuple[ThreadingHTTPServer, Loopback]:
    record: list[Seen] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
            record.append(seen)
            status, headers, body = handler(seen)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, Loopback(f"http://127.0.0.1:{server.server_port}", record)


@pytest.fixture
def loopback() -> Iterator[Callable[[Callable[[Seen], Answer]], Loopback]]:
    servers: list[ThreadingHTTPServer] = []

    def start(handler: Callable[[Seen], Answer]) -> Loopback:
        server, info = _serve(handler)
        servers.append(server)
        return info

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def client_for() -> Iterator[Callable[..., RegistryClient]]:
    """``client_for(url, **kwargs)``: a RegistryClient closed at the end of the test."""
    clients: list[RegistryClient] = []

    def make(url: str, **kwargs: Any) -> RegistryClient:
        clients.append(RegistryClient(url, **kwargs))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def bcrypt_hash(password: str) -> str:
    """htpasswd's bcrypt line without apache2-utils (glibc's crypt does bcrypt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # deprecated in 3.11, gone in 3.13; fine for a test helper

        # Cost 4 (2**4 rounds), bcrypt's minimum: the registry checks it on every request.
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


@dataclass
class AuthRegistry(LocalRegistry):
    """A LocalRegistry whose config adds an ``auth`` section (htpasswd or token)."""

    auth: dict[str, Any] = field(default_factory=dict)

    def write_config(self) -> Path:
        path = super().write_config()
        config = yaml.safe_load(path.read_text())
        config["auth"] = self.auth
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path


class TokenIssuer:
    """A token server: RS256 JWTs with an ``x5c`` header, signed with openssl, as
    docker-registry's ``auth.token`` expects. Records every request it answers."""

    def __init__(self, root: Path, users: dict[str, str], service: str = "tw-registry") -> None:
        self.root, self.users, self.service, self.issuer = root, users, service, "tw-test"
        root.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = root / "key.pem", root / "cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
             "-out", str(self.cert), "-days", "2", "-subj", "/CN=tagwarden-test-token"],
            check=True, capture_output=True,
        )
        self.der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True, capture_output=True,
        ).stdout
        self.server, self.info = _serve(self._answer)

    @property
    def realm(self) -> str:
        return f"{self.info.url}/token"

    def _answer(self, seen: Seen) -> Answer:
        header = seen.headers.get("authorization", "")
        user = None
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(name) != password:
                return 401, {"Content-Type": "application/json"}, b'{"details":"bad password"}'
            user = name
        scope = parse_qs(urlsplit(seen.path).query).get("scope", [""])[0]
        # Anonymous callers get a token with no access: the registry then answers 401.
        token = self.sign(scope if user else "", user or "")
        return 200, {"Content-Type": "application/json"}, json.dumps({"token": token}).encode()

    def sign(self, scope: str, subject: str) -> str:
        def b64(raw: bytes) -> str:
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        access = []
        if scope:
            kind, name, actions = scope.rsplit(":", 2) if scope.count(":") > 2 else scope.split(":")
            access = [{"type": kind, "name": name, "actions": actions.split(",")}]
        now = int(time.time())
        head = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(self.der).decode()]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": f"{now}-{scope}", "access": access}
        signing = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing.encode(), check=True, capture_output=True,
        ).stdout
        return f"{signing}.{b64(signature)}"

    def registry_auth(self) -> dict[str, Any]:
        return {"token": {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                          "rootcertbundle": str(self.cert)}}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def auth_registry_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], AuthRegistry]]:
    if registry_binary() is None:
        missing("docker-registry")
    started: list[AuthRegistry] = []

    def make(auth: dict[str, Any]) -> AuthRegistry:
        reg = AuthRegistry(root=tmp_path / f"auth-registry{len(started)}", auth=auth)
        started.append(reg)
        return _start_allowing_401(reg)

    yield make
    for reg in started:
        reg.stop()


def _start_allowing_401(reg: AuthRegistry) -> AuthRegistry:
    # LocalRegistry.start waits for a 200 on /v2/; with auth on, the answer is 401. Wait for
    # any HTTP answer instead.
    import httpx

    reg.write_config()
    binary = registry_binary()
    assert binary is not None
    log = (reg.root / "registry.log").open("ab")
    reg._proc = subprocess.Popen([binary, "serve", str(reg.config_path)], stdout=log,
                                 stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{reg.url}/v2/", timeout=1.0)
            return reg
        except httpx.HTTPError:
            time.sleep(0.05)
    reg.stop()
    log_text = (reg.root / "registry.log").read_text()
    raise RuntimeError(f"registry with auth did not start: {log_text}")


@pytest.fixture
def token_issuer(tmp_path: Path) -> Iterator[TokenIssuer]:
    issuer = TokenIssuer(tmp_path / "token", {"alice": "s3cret"})
    yield issuer
    issuer.close()
