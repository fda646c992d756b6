"""Auth against real docker-registry instances: ``auth.htpasswd`` (basic) and ``auth.token``
(Bearer, with our own token issuer on loopback signing RS256 JWTs the registry verifies)."""

from __future__ import annotations

from urllib.parse import unquote

import httpx
import pytest

from recommender.errors import AuthError
from recommender.registry.auth import RegistryAuth, parse_challenge, request_scope
from recommender.registry.push import push_image

from .conftest import bcrypt_hash

pytestmark = pytest.mark.registry


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
         'scope="repository:samalba/my-app:pull,push"', "bearer",
         {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
          "scope": "repository:samalba/my-app:pull,push"}),
        ('Basic realm="Registry Realm"', "basic", {"realm": "Registry Realm"}),
        ("Bearer realm=https://ghcr.io/token, service=ghcr.io", "bearer",
         {"realm": "https://ghcr.io/token", "service": "ghcr.io"}),
        ('bearer realm="a\\"b"', "bearer", {"realm": 'a\\"b'}),
        ("", "", {}),
    ],
)
def test_parse_challenge(header, scheme, params):
    assert parse_challenge(header) == (scheme, params)


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/v2/_catalog", "registry:catalog:*"),
        ("GET", "/v2/team/app/tags/list", "repository:team/app:pull"),
        ("HEAD", "/v2/a/b/c/manifests/v1", "repository:a/b/c:pull"),
        ("PUT", "/v2/team/app/manifests/v1", "repository:team/app:pull,push"),
        ("POST", "/v2/team/app/blobs/uploads/", "repository:team/app:pull,push"),
        ("DELETE", "/v2/team/app/manifests/sha256:ab", "repository:team/app:delete"),
        ("GET", "/v2/", None),
    ],
)
def test_request_scope(method, path, scope):
    assert request_scope(httpx.Request(method, f"http://r{path}")) == scope


def test_basic_auth_against_htpasswd(auth_registry_factory, tmp_path, client_for):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{bcrypt_hash('s3cret')}\n")
    reg = auth_registry_factory({"htpasswd": {"realm": "tagwarden", "path": str(htpasswd)}})

    client = client_for(reg.url, auth=RegistryAuth("alice", "s3cret"))
    image = push_image(client, "team/app", "v1")
    assert client.list_tags("team/app") == ["v1"]
    assert client.catalog() == ["team/app"]
    client.delete_manifest("team/app", image.digest)
    assert client.head_manifest("team/app", image.digest) is None

    with pytest.raises(AuthError) as err:
        client_for(reg.url, auth=RegistryAuth("alice", "wrong")).list_tags("team/app")
    assert err.value.status == 401 and err.value.code == "UNAUTHORIZED"
    with pytest.raises(AuthError):
        client_for(reg.url).catalog()  # anonymous


def test_bearer_tokens_from_the_realm_against_auth_token(
    auth_registry_factory, token_issuer, client_for
):
    reg = auth_registry_factory(token_issuer.registry_auth())
    auth = RegistryAuth("alice", "s3cret")
    client = client_for(reg.url, auth=auth)

    image = push_image(client, "team/app", "v1")
    assert client.resolve("team/app", "v1") == image.digest
    assert client.catalog() == ["team/app"]
    client.delete_manifest("team/app", image.digest)
    assert client.list_tags("team/app") == []

    def normal(scope: str) -> str:  # the registry orders "pull,push" either way
        kind, _, actions = unquote(scope).rpartition(":")
        return f"{kind}:{','.join(sorted(actions.split(',')))}"

    scopes = sorted(normal(s.path.split("scope=")[1]) for s in token_issuer.info.seen)
    assert scopes == [
        "registry:catalog:*",
        "repository:team/app:delete",
        "repository:team/app:pull",
        "repository:team/app:pull,push",
    ]
    # Basic credentials went to the realm only, never to the registry.
    assert all(s.headers["authorization"].startswith("Basic ") for s in token_issuer.info.seen)
    # One token per scope, cached: more calls fetch nothing new.
    fetched = auth.token_requests
    client.list_tags("team/app")
    client.head_manifest("team/app", "v1")
    assert auth.token_requests == fetched == 4


def test_bearer_with_wrong_password_or_anonymous(auth_registry_factory, token_issuer, client_for):
    reg = auth_registry_factory(token_issuer.registry_auth())
    with pytest.raises(AuthError) as err:
        client_for(reg.url, auth=RegistryAuth("alice", "nope")).list_tags("team/app")
    assert err.value.status == 401 and "refused" in err.value.message
    # Anonymous: the issuer hands out a token without access; the registry still says 401.
    with pytest.raises(AuthError) as err:
        client_for(reg.url).catalog()
    assert err.value.status == 401


def test_an_expired_token_is_fetched_again_once(loopback, client_for):
    state = {"issued": 0, "valid": None, "refuse": False}
    server = None

    def answer(seen):
        if seen.path.startswith("/token"):
            state["issued"] += 1
            if not state["refuse"]:
                state["valid"] = f"t{state['issued']}"
            token = f"t{state['issued']}"
            return 200, {"Content-Type": "application/json"}, f'{{"token": "{token}"}}'.encode()
        if seen.headers.get("authorization") != f"Bearer {state['valid']}":
            challenge = (f'Bearer realm="{server.url}/token",service="loop",'
                         'scope="repository:r:pull"')
            return 401, {"WWW-Authenticate": challenge}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'
        return 200, {"Content-Type": "application/json"}, b'{"name":"r","tags":["a"]}'

    server = loopback(answer)
    auth = RegistryAuth()  # anonymous: tokens without credentials
    client = client_for(server.url, auth=auth)
    assert client.list_tags("r") == ["a"]
    assert client.list_tags("r") == ["a"]  # cached token, no new fetch
    assert auth.token_requests == 1
    state["valid"] = "rotated"  # t1 expired: refused once, t2 fetched, the retry succeeds
    assert client.list_tags("r") == ["a"]
    assert auth.token_requests == 2
    state["refuse"], state["valid"] = True, "nothing"  # no token works any more
    with pytest.raises(AuthError) as err:
        client.list_tags("r")  # t2 refused -> t3 fetched -> refused: one retry, no loop
    assert auth.token_requests == 3 and err.value.status == 401
    token_calls = [s for s in server.seen if s.path.startswith("/token")]
    assert all("authorization" not in s.headers for s in token_calls)  # anonymous
