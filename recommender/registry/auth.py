"""Registry authentication as an ``httpx.Auth`` flow: anonymous, basic, and Bearer tokens.

The token handshake (Docker token spec, as go-containerregistry's ``transport/bearer.go``):

1. Send the request as is (or with a token cached for the same scope).
2. A 401 carries ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``.
3. GET the realm with ``service`` and ``scope`` (basic credentials when we have them) and read
   ``token`` (or ``access_token``) from its JSON answer.
4. Cache the token per (host, request scope) and retry once.

A ``Basic`` challenge is answered with the credentials, once; after that the host gets them
pre-emptively. Without credentials an anonymous token is still asked for (public images).
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx
import orjson

from ..errors import AuthError

__all__ = ["RegistryAuth", "parse_challenge", "request_scope"]

_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')
_REPO_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags|referrers)(?:/|$)")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",scope="a:b:c,d"`` → ("bearer", {"realm": "x", "scope": "a:b:c,d"})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(rest)
    }
    return scheme.lower(), params


def request_scope(request: httpx.Request) -> str | None:
    """The token scope a request needs, guessed from its path and method (cache key)."""
    path = request.url.path
    if path.rstrip("/") == "/v2/_catalog":
        return "registry:catalog:*"
    match = _REPO_PATH.match(path)
    if match is None:
        return None
    if request.method == "DELETE":
        actions = "delete"
    elif request.method in {"GET", "HEAD"}:
        actions = "pull"
    else:
        actions = "pull,push"
    return f"repository:{match.group('name')}:{actions}"


class RegistryAuth(httpx.Auth):
    """Anonymous when ``username`` is None; otherwise basic or Bearer, as the registry asks.

    Thread-safe (the token cache is shared by a sync client's threads); the async client
    uses the same flow through ``async_auth_flow``.
    """

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self.username = username
        self.password = password
        self._lock = threading.Lock()
        self._by_scope: dict[tuple[str, str], str] = {}  # (host, request scope) -> token
        self._basic_hosts: set[str] = set()
        self.token_requests = 0  # how many tokens were fetched (tests, metrics)

    def _basic_header(self) -> str | None:
        if self.username is None:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _prepare(self, request: httpx.Request) -> None:
        """Attach what we already know works for this host and scope."""
        if not self._by_scope and not self._basic_hosts:
            return  # nothing learnt yet (an anonymous registry: every request of a scan)
        host = request.url.netloc.decode("ascii")
        scope = request_scope(request)
        with self._lock:
            token = self._by_scope.get((host, scope or ""))
            basic = host in self._basic_hosts
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        elif basic and (header := self._basic_header()):
            request.headers["Authorization"] = header

    def _flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._prepare(request)
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("www-authenticate", ""))
        host = request.url.netloc.decode("ascii")
        if scheme == "basic":
            header = self._basic_header()
            if header is None or request.headers.get("Authorization") == header:
                return  # nothing (new) to offer: the 401 stands
            with self._lock:
                self._basic_hosts.add(host)
            request.headers["Authorization"] = header
            yield request
            return
        if scheme != "bearer" or not params.get("realm"):
            return
        token = yield from self._fetch_token(params)
        scope = request_scope(request)
        with self._lock:
            self._by_scope[(host, scope or "")] = token
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def _fetch_token(
        self, params: dict[str, str]
    ) -> Generator[httpx.Request, httpx.Response, str]:
        realm, service, scope = params["realm"], params.get("service", ""), params.get("scope", "")
        # Reached only on a 401: either no token yet for this scope or the cached one expired.
        query: dict[str, str] = {}
        if service:
            query["service"] = service
        if scope:
            query["scope"] = scope
        headers = {}
        if (basic := self._basic_header()) is not None:
            headers["Authorization"] = basic
        token_request = httpx.Request("GET", realm, params=query, headers=headers)
        token_request.extensions["tagwarden_token_request"] = True
        response = yield token_request
        if response.status_code in (401, 403):
            raise AuthError(
                f"token endpoint refused the credentials ({response.status_code})",
                status=response.status_code, url=realm, scope=scope,
            )
        if response.status_code != 200:
            raise AuthError(
                f"token endpoint answered {response.status_code}",
                status=response.status_code, url=realm, scope=scope,
                temporary=response.status_code >= 500,
            )
        try:
            doc: Any = orjson.loads(response.content)
            token = doc.get("token") or doc.get("access_token")
        except (orjson.JSONDecodeError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise AuthError("token endpoint answered without a token", url=realm, scope=scope)
        with self._lock:
            self.token_requests += 1
        return token

    # Only token responses are read into memory; registry responses (blobs) stay streamed.

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self._flow(request)
        outgoing = next(flow)
        while True:
            response = yield outgoing
            if outgoing.extensions.get("tagwarden_token_request"):
                response.read()
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._flow(request)
        outgoing = next(flow)
        while True:
            response = yield outgoing
            if outgoing.extensions.get("tagwarden_token_request"):
                await response.aread()
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return
