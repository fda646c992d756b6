"""Auth against real docker-registry instances: ``auth.htpasswd`` (basic) and ``auth.token``
(Bearer, with our own token issuer on loopback signing RS256 JWTs the registry verifies)."""

from __future__ import annotations

from urllib.parse import unquote

import httpx
import pytest

from recommender.errors import AuthError
from recommender.registry import RegistryAuth, push_image
from recommender.registry.auth import parse_challenge, request_scope

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
