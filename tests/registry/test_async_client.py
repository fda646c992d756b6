"""AsyncRegistryClient (httpx.AsyncClient over aiohttp): the auth flow, redirects and retries,
against real registries and loopback servers."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

import httpx
import pytest

from recommender.errors import AuthError, RegistryError
from recommender.registry.aio import AsyncRegistryClient
from recommender.registry.auth import RegistryAuth
from recommender.registry.models import digest_of
from recommender.registry.push import push_image
from recommender.registry.transport import AiohttpTransport

pytestmark = pytest.mark.registry


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_reads_a_real_registry_on_one_kept_alive_connection(registry, client_for):
    client = client_for(registry.url)
    image = push_image(client, "team/app", "v1", labels={"team": "payments"})
    push_image(client, "team/app", "v2", platforms=["linux/amd64", "linux/arm64"])

    async def go() -> None:
        async with AsyncRegistryClient(registry.url, max_connections=4) as aclient:
            assert isinstance(aclient._transport, AiohttpTransport)
            assert await aclient.catalog() == ["team/app"]
            assert sorted(await aclient.list_tags("team/app")) == ["v1", "v2"]
            manifest = await aclient.get_manifest("team/app", "v1")
            assert manifest.digest == image.digest
            assert manifest.config is not None
            config_digest = manifest.config["digest"]
            config = await aclient.get_blob("team/app", config_digest)
            assert b"payments" in config
            index = await aclient.get_manifest("team/app", "v2")
            assert index.is_index and len(index.children) == 2
            assert await aclient.head_manifest("team/app", image.digest) == image.digest
            assert await aclient.head_manifest("team/app", "gone") is None
            assert await aclient.blob_size("team/app", config_digest) == len(config)
            assert aclient._transport.connections_opened == 1  # sequential: one connection
            many = await asyncio.gather(*(aclient.get_manifest("team/app", "v1")
                                          for _ in range(20)))
            assert {m.digest for m in many} == {image.digest}
            assert aclient._transport.connections_opened <= 4

    run(go())


def test_one_client_serves_one_event_loop_after_another(registry, client_for):
    # As inventory.scan does (asyncio.run per call, close_idle before the loop ends): the
    # connections of a finished loop are not reused by the next one.
    image = push_image(client_for(registry.url), "team/app", "v1")
    aclient = AsyncRegistryClient(registry.url)

    async def fetch() -> str:
        try:
            return (await aclient.get_manifest("team/app", "v1")).digest
        finally:
            await aclient.close_idle()

    assert run(fetch()) == run(fetch()) == image.digest
    assert isinstance(aclient._transport, AiohttpTransport)
    assert aclient._transport.connections_opened == 2
    run(aclient.aclose())


def test_bearer_tokens_through_the_async_flow(auth_registry_factory, token_issuer, client_for):
    reg = auth_registry_factory(token_issuer.registry_auth())
    image = push_image(client_for(reg.url, auth=RegistryAuth("alice", "s3cret")), "team/app",
                       "v1")
    token_issuer.info.seen.clear()

    async def go() -> RegistryAuth:
        auth = RegistryAuth("alice", "s3cret")
        async with AsyncRegistryClient(reg.url, auth=auth) as aclient:
            assert await aclient.catalog() == ["team/app"]
            assert (await aclient.get_manifest("team/app", "v1")).digest == image.digest
            assert await aclient.list_tags("team/app") == ["v1"]
        return auth

    auth = run(go())
    scopes = sorted(unquote(s.path.split("scope=")[1]) for s in token_issuer.info.seen)
    assert scopes == ["registry:catalog:*", "repository:team/app:pull"]  # cached per scope
    assert auth.token_requests == 2

    async def refused() -> None:
        async with AsyncRegistryClient(reg.url, auth=RegistryAuth("alice", "no")) as aclient:
            await aclient.list_tags("team/app")

    with pytest.raises(AuthError, match="refused"):
        run(refused())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_redirect_to_another_origin_carries_no_credentials(loopback, client_for, kind):
    blob = b'{"architecture": "amd64"}'
    digest = digest_of(blob)
    storage = loopback(lambda seen: (200, {"Content-Type": "application/octet-stream"}, blob))

    def registry(seen):
        if seen.headers.get("authorization") != "Basic YWxpY2U6czNjcmV0":
            return 401, {"WWW-Authenticate": 'Basic realm="r"'}, b"{}"
        if seen.path.startswith("/v2/r/blobs/"):
            return 307, {"Location": f"{storage.url}/signed{seen.path}?sig=x"}, b""
        if seen.path.startswith("/v2/moved/"):  # same origin: credentials kept
            return 302, {"Location": seen.path.replace("/moved/", "/r/")}, b""
        return 404, {}, b"{}"

    origin = loopback(registry)
    auth = RegistryAuth("alice", "s3cret")
    if kind == "sync":
        got = client_for(origin.url, auth=auth).get_blob("r", digest)
        again = client_for(origin.url, auth=auth).get_blob("moved", digest)
    else:
        async def go() -> tuple[bytes, bytes]:
            async with AsyncRegistryClient(origin.url, auth=auth) as aclient:
                return (await aclient.get_blob("r", digest),
                        await aclient.get_blob("moved", digest))

        got, again = run(go())
    assert got == again == blob
    assert [s.path for s in storage.seen] == [f"/signed/v2/r/blobs/{digest}?sig=x"] * 2
    assert all("authorization" not in s.headers for s in storage.seen)
    assert [s.path for s in origin.seen if s.headers.get("authorization")] == [
        f"/v2/r/blobs/{digest}", f"/v2/moved/blobs/{digest}", f"/v2/r/blobs/{digest}"]


def test_retries_honour_retry_after_and_spare_posts(loopback):
    calls = {"n": 0}

    def answer(seen):
        calls["n"] += 1
        if seen.method == "HEAD":
            return 404, {}, b""  # the blob is not there yet: push_blob starts an upload
        if seen.method == "POST" or calls["n"] < 3:
            return 503, {"Retry-After": "7"}, b'{"errors":[{"code":"UNAVAILABLE"}]}'
        return 200, {"Content-Type": "application/json"}, b'{"name":"r","tags":["a"]}'

    server = loopback(answer)
    slept: list[float] = []

    async def go() -> list[str]:
        async with AsyncRegistryClient(server.url, sleep=slept.append) as aclient:
            tags = await aclient.list_tags("r")
            with pytest.raises(RegistryError) as err:
                await aclient.push_blob("r", b"data")
            assert err.value.status == 503 and err.value.temporary
            return tags

    assert run(go()) == ["a"]
    assert slept == [7.0, 7.0]
    assert [s.method for s in server.seen].count("POST") == 1  # never sent twice


def test_an_injected_async_transport_is_driven(
    registry, client_for
):
    push_image(client_for(registry.url), "team/app", "v1")

    class Counting(AiohttpTransport):
        def __init__(self) -> None:
            super().__init__()
            self.paths: list[str] = []

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            self.paths.append(request.url.path)
            return await super().handle_async_request(request)

    counting = Counting()

    async def go(transport: httpx.AsyncBaseTransport) -> list[str]:
        async with AsyncRegistryClient(registry.url, transport=transport) as aclient:
            return await aclient.list_tags("team/app")

    assert run(go(counting)) == ["v1"]
    assert counting.paths == ["/v2/team/app/tags/list"]
    assert run(go(httpx.AsyncHTTPTransport())) == ["v1"]  # httpx's own, as behind a proxy
