"""The asyncio Distribution client, on ``httpx.AsyncClient``: the scan.

httpx does the auth flow (``auth.py``), redirects and default headers; beneath it, by default,
:class:`~.transport.AiohttpTransport` moves the bytes (aiohttp's pool and C parser on the event
loop's own thread: the scan is bound by the client's CPU). A registry reached through a proxy
gets httpx's own transport, which honours the environment's proxy settings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from .models import Manifest, Referrer
from .operations import USER_AGENT, Call, ClientBase, Op, T, ping
from .protocol import ImageRecord, ReclaimHint
from .transport import AiohttpTransport, uses_proxy

__all__ = ["AsyncRegistryClient"]


class AsyncRegistryClient(ClientBase):
    """The operations with an asyncio face. ``transport``: an ``httpx.AsyncBaseTransport``
    (tests); ``sleep``: the retries' clock when not :func:`asyncio.sleep` (tests). At most
    ``max_connections`` requests are in flight."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30,
        user_agent: str = USER_AGENT,
        retries: int = 3,
        backoff: float = 0.2,
        verify: bool = True,
        max_connections: int = 32,
        sleep: Callable[[float], None] = time.sleep,
        reclaim: ReclaimHint | None = None,
    ) -> None:
        super().__init__(base_url, auth=auth, timeout=timeout, user_agent=user_agent,
                         retries=retries, backoff=backoff, reclaim=reclaim)
        self._sleep = sleep
        if transport is None and not uses_proxy(base_url):
            transport = AiohttpTransport(verify=verify, max_connections=max_connections)
        self._transport = transport
        self._verify = verify
        self._limits = httpx.Limits(max_connections=max_connections,
                                    max_keepalive_connections=max_connections)
        self._http = self._client()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            auth=self.auth, transport=self._transport, timeout=self.timeout,
            verify=self._verify, headers={"User-Agent": self.user_agent},
            follow_redirects=True, limits=self._limits,
        )

    async def _send(self, call: Call) -> httpx.Response:
        """One call with retries, as :meth:`.sync.RegistryClient._send`."""
        attempt = 0
        while True:
            response: httpx.Response | None = None
            exc: Exception | None = None
            try:
                response = await self._http.send(self._http.build_request(
                    call.method, self._url(call), params=call.params, headers=call.headers,
                    content=call.content))
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

    async def _run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                call = op.send(await self._send(call))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def ping(self) -> None:
        await self._run(ping())

    async def catalog(self, *, n: int | None = None) -> list[str]:
        return await self._run(self._catalog(n))

    async def repositories(self) -> list[str]:
        return await self.catalog()

    async def list_tags(self, repo: str, *, n: int | None = None) -> list[str]:
        return await self._run(self._list_tags(repo, n))

    async def list_images(self, repo: str) -> list[ImageRecord] | None:
        """None: the Distribution API has no bulk listing of a repository's manifests."""
        return None

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
        used from one ``asyncio.run`` after another calls this before each loop ends. The next
        call gets a fresh ``httpx.AsyncClient`` on the same transport (which reopens)."""
        await self._http.aclose()
        self._http = self._client()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
