"""The registry client against Debian's docker-registry, and against scripted loopback servers
for the failures a healthy registry never shows."""

from __future__ import annotations

import json

import httpx
import pytest

from recommender.errors import DigestMismatch, NotFound, RegistryError, Unsupported
from recommender.registry import mediatypes as mt
from recommender.registry.local import free_port
from recommender.registry.models import digest_of
from recommender.registry.push import push_image, push_referrer, push_signature

pytestmark = pytest.mark.registry


class Recording(httpx.HTTPTransport):
    """The real transport, keeping the URLs it sent (to see pagination happen)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return super().handle_request(request)


def test_catalog_and_tags_follow_link_pagination(registry, client_for):
    transport = Recording()
    client = client_for(registry.url, transport=transport)
    for repo in ("a/one", "b/two", "c/three"):
        push_image(client, repo, "v1", layers=(64,))
    tags = [f"v{i}" for i in range(1, 6)]
    for tag in tags:
        push_image(client, "a/one", tag, layers=(64,))
    transport.urls.clear()

    assert client.catalog(n=2) == ["a/one", "b/two", "c/three"]
    catalog_calls = [u for u in transport.urls if "/_catalog" in u]
    assert len(catalog_calls) == 2 and "last=b%2Ftwo" in catalog_calls[1].replace("/", "%2F")

    # Distribution 2.8 ignores ``n`` on tags/list (paginated from 3.0): one complete page.
    assert sorted(client.list_tags("a/one", n=2)) == tags
    assert sorted(client.list_tags("a/one")) == tags


def test_tags_follow_link_pagination_of_a_registry_that_pages(loopback, client_for):
    # A relative Link, as Distribution sends it.
    pages = {
        "/v2/r/tags/list?n=2": (b'{"tags":["a","b"]}', '</v2/r/tags/list?last=b&n=2>; rel="next"'),
        "/v2/r/tags/list?last=b&n=2": (b'{"tags":["c","d"]}', None),
    }

    def answer(seen):
        body, link = pages[seen.path]
        return 200, {"Content-Type": "application/json", **({"Link": link} if link else {})}, body

    server = loopback(answer)
    assert client_for(server.url).list_tags("r", n=2) == ["a", "b", "c", "d"]
    assert [s.path for s in server.seen] == list(pages)


def test_manifest_is_fetched_verified_and_resolved(registry, client_for):
    client = client_for(registry.url)
    image = push_image(client, "team/app", "v1", layers=(1000, 2000), labels={"team": "pay"})

    manifest = client.get_manifest("team/app", "v1")
    assert manifest.digest == image.digest == digest_of(manifest.body)
    assert manifest.media_type == mt.OCI_MANIFEST and not manifest.is_index
    assert [b["digest"] for b in manifest.blobs] == list(image.blobs)
    assert client.resolve("team/app", "v1") == image.digest
    assert client.head_manifest("team/app", "v1") == image.digest
    assert client.get_manifest("team/app", image.digest).body == manifest.body

    config = json.loads(client.get_blob("team/app", manifest.config["digest"]))
    assert config["config"]["Labels"] == {"team": "pay"}
    assert client.blob_size("team/app", manifest.layers[1]["digest"]) == image.blobs[
        manifest.layers[1]["digest"]]
    assert client.head_manifest("team/app", "nope") is None
    assert client.blob_size("team/app", "sha256:" + "0" * 64) is None


def test_pushing_twice_gives_the_same_digest_and_reuses_blobs(registry, client_for):
    client = client_for(registry.url)
    first = push_image(client, "team/app", "v1")
    again = push_image(client, "team/app", "v1")
    other = push_image(client, "team/app", "v2")
    assert first.digest == again.digest != other.digest


def test_index_and_children(registry, client_for):
    client = client_for(registry.url)
    index = push_image(client, "team/multi", "1.0", platforms=["linux/amd64", "linux/arm64"])

    fetched = client.get_manifest("team/multi", "1.0")
    assert fetched.is_index and fetched.digest == index.digest
    assert [c["digest"] for c in fetched.children] == [c.digest for c in index.children]
    assert [c["platform"]["architecture"] for c in fetched.children] == ["amd64", "arm64"]
    for child in index.children:
        assert client.get_manifest("team/multi", child.digest).media_type == mt.OCI_MANIFEST
    assert client.list_tags("team/multi") == ["1.0"]  # children are untagged


def test_referrers_fall_back_to_the_tag_schema_and_cosign_tags(registry, client_for):
    client = client_for(registry.url)
    image = push_image(client, "team/app", "v1")
    signature = push_signature(client, image)
    sbom = push_referrer(client, image, artifact_type="application/spdx+json")
    other = push_image(client, "team/app", "v2")

    found = {r.digest: r for r in client.referrers("team/app", image.digest)}
    assert set(found) == {signature.digest, sbom.digest}
    assert found[signature.digest].kind == "signature"
    assert found[signature.digest].tag == image.digest.replace(":", "-") + ".sig"
    assert found[sbom.digest].kind == "sbom"
    assert client.get_manifest("team/app", sbom.digest).subject == image.digest
    assert client.referrers("team/app", other.digest) == []


def test_delete_removes_the_manifest_and_every_tag_on_it(registry, client_for):
    client = client_for(registry.url)
    image = push_image(client, "team/app", "v1")
    push_image(client, "team/app", "latest", seed=("team/app", "v1"))  # same digest, 2nd tag
    keep = push_image(client, "team/app", "v2")

    client.delete_manifest("team/app", image.digest)
    with pytest.raises(NotFound) as err:
        client.get_manifest("team/app", image.digest)
    assert err.value.status == 404 and err.value.code == "MANIFEST_UNKNOWN"
    assert client.list_tags("team/app") == ["v2"]
    assert client.resolve("team/app", "v2") == keep.digest
    with pytest.raises(NotFound):
        client.delete_manifest("team/app", image.digest)


def test_garbage_collection_frees_exactly_the_unshared_blobs(registry, client_for):
    client = client_for(registry.url)
    from recommender.registry.push import layer_tar

    shared = layer_tar("shared-base", 4096)
    doomed = push_image(client, "team/app", "old", layers=(shared, 3000))
    kept = push_image(client, "other/app", "v1", layers=(shared, 2000), mount_from="team/app")
    before = registry.blob_files()
    assert set(doomed.blobs) | set(kept.blobs) | {doomed.digest, kept.digest} <= before

    client.delete_manifest("team/app", doomed.digest)
    registry.stop()
    registry.garbage_collect()
    freed = before - registry.blob_files()

    unshared = set(doomed.blobs) - set(kept.blobs)
    assert freed == unshared | {doomed.digest}  # config, own layer, the manifest itself
    assert digest_of(shared) not in freed


def test_a_registry_that_is_down_is_a_temporary_error_after_retries(client_for):
    delays: list[float] = []
    client = client_for(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01,
                            sleep=delays.append)
    with pytest.raises(RegistryError) as err:
        client.list_tags("team/app")
    assert err.value.temporary and err.value.status is None
    assert delays == [0.01, 0.02]
    assert "127.0.0.1" in err.value.url


def test_retry_after_is_honoured_for_idempotent_calls(loopback, client_for):
    answers = [
        (429, {"Retry-After": "3"}, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow"}]}'),
        (503, {}, b""),
        (200, {"Content-Type": "application/json"}, b'{"name":"x","tags":["a"]}'),
    ]
    server = loopback(lambda seen: answers.pop(0))
    delays: list[float] = []
    client = client_for(server.url, sleep=delays.append, backoff=0.5)
    assert client.list_tags("x") == ["a"]
    assert delays == [3.0, 1.0]  # Retry-After first, then exponential backoff (0.5 * 2)


def test_a_non_idempotent_call_is_not_retried(loopback, client_for):
    server = loopback(lambda seen: (503, {}, b""))
    client = client_for(server.url, sleep=lambda _: None)
    with pytest.raises(RegistryError) as err:
        client.delete_manifest("x", "sha256:" + "a" * 64)
    assert err.value.temporary and err.value.status == 503
    assert len(server.seen) == 1


def test_tampered_manifest_is_a_digest_mismatch(loopback, client_for):
    real = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
    claimed = digest_of(b"something else")
    server = loopback(lambda seen: (
        200, {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": claimed}, real))
    client = client_for(server.url)
    with pytest.raises(DigestMismatch) as err:
        client.get_manifest("team/app", "v1")
    assert err.value.detail["expected"] == claimed
    assert err.value.detail["actual"] == digest_of(real)
    # Without the header, asking by digest still checks the body against what we asked for.
    server2 = loopback(lambda seen: (200, {"Content-Type": mt.OCI_MANIFEST}, real))
    with pytest.raises(DigestMismatch):
        client_for(server2.url).get_manifest("team/app", claimed)


def test_unsupported_delete_and_error_codes(loopback, client_for):
    body = b'{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}'
    server = loopback(lambda seen: (405, {"Content-Type": "application/json"}, body))
    with pytest.raises(Unsupported) as err:
        client_for(server.url).delete_manifest("team/app", "sha256:" + "b" * 64)
    assert err.value.code == "UNSUPPORTED" and err.value.status == 405
    assert err.value.as_dict()["error"].startswith("registry answered 405 UNSUPPORTED")


def test_requests_carry_the_user_agent_and_urls_are_redacted(loopback, client_for):
    server = loopback(lambda seen: (404, {}, b"not json"))
    client = client_for(server.url.replace("http://", "http://bob:pw@"),
                            user_agent="tagwarden-test/1")
    with pytest.raises(NotFound) as err:
        client.get_blob("r", "sha256:" + "c" * 64)
    assert server.seen[0].headers["user-agent"] == "tagwarden-test/1"
    assert "bob" not in err.value.url and "pw" not in err.value.url
    assert err.value.code is None


@pytest.mark.parametrize("body", [b"<html>proxy error</html>", b"[1, 2]"])
def test_a_body_that_is_not_a_json_object_is_a_registry_error(loopback, client_for, body):
    server = loopback(lambda seen: (200, {"Content-Type": "application/json"}, body))
    with pytest.raises(RegistryError) as err:
        client_for(server.url).list_tags("team/app")
    assert "tags list is not" in err.value.message and err.value.url.endswith("/tags/list")
    with pytest.raises(RegistryError, match="manifest is not"):
        client_for(server.url).get_manifest("team/app", "v1")


def test_referrers_api_is_used_when_the_registry_has_it(loopback, client_for):
    subject = "sha256:" + "d" * 64
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 10,
         "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"},
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "2" * 64, "size": 10,
         "artifactType": "application/vnd.cyclonedx+json"},
    ]}).encode()
    server = loopback(lambda seen: (200, {"Content-Type": mt.OCI_INDEX}, index))
    found = client_for(server.url).referrers("team/app", subject)
    assert [(r.digest[-1], r.kind) for r in found] == [("1", "signature"), ("2", "sbom")]
    assert [s.path for s in server.seen] == [f"/v2/team/app/referrers/{subject}"]
