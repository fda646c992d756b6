"""Pod lists as ``kubectl get pods -A -o json`` prints them, from several runtimes."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from recommender.collector.k8s import parse_pod_list
from recommender.errors import PayloadError

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INDEX = "sha256:" + "1" * 64
PLATFORM = "sha256:" + "2" * 64
NGINX = "sha256:" + "3" * 64
LOCAL = "sha256:" + "4" * 64


def pod(name: str, spec: dict[str, Any], status: dict[str, Any], ns: str = "shop"
        ) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": "u-" + name},
            "spec": spec, "status": {"phase": "Running", **status}}


POD_LIST = {
    "apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
    "items": [
        # containerd: imageID is repo@digest; the spec asked for an index digest and the
        # runtime reports the platform digest
        pod("api-7d9f", {
            "containers": [{"name": "api", "image": f"registry.example.com/shop/api:1.4@{INDEX}"}],
            "initContainers": [{"name": "migrate", "image": "registry.example.com/shop/migrate:7"}],
        }, {
            "containerStatuses": [{
                "name": "api", "image": "registry.example.com/shop/api:1.4", "ready": True,
                "imageID": f"registry.example.com/shop/api@{PLATFORM}",
                "containerID": "containerd://abc"}],
            "initContainerStatuses": [{
                "name": "migrate", "image": "registry.example.com/shop/migrate:7",
                "imageID": f"registry.example.com/shop/migrate@{NGINX}"}],
        }),
        # dockershim: docker-pullable:// prefix, Docker Hub short names
        pod("web-1", {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}, {
            "containerStatuses": [{"name": "nginx", "image": "nginx:1.25",
                                   "imageID": f"docker-pullable://nginx@{NGINX}"}]}, ns="web"),
        # a locally built image: docker://sha256 is an image id, not a registry digest
        pod("local-1", {"containers": [{"name": "tool", "image": "localhost:5000/tool"}]}, {
            "containerStatuses": [{"name": "tool", "image": f"sha256:{'4' * 64}",
                                   "imageID": f"docker://{LOCAL}"}]}),
        # pending: no statuses yet, the spec is all there is; an ephemeral debug container
        pod("pending-1", {
            "containers": [{"name": "w", "image": "registry.example.com/shop/worker:2"}],
            "ephemeralContainers": [{"name": "debug", "image": "busybox:1.36"}],
        }, {"phase": "Pending"}),
    ],
}


def refs_of(doc: Any) -> set[tuple[str | None, ...]]:
    snap = parse_pod_list(doc, source="eu-1", taken_at=AT)
    return {(r.pod, r.container, r.container_kind, r.registry, r.repository, r.tag, r.digest)
            for r in snap.refs}


def test_a_kubectl_pod_list() -> None:
    snap = parse_pod_list(POD_LIST, source="eu-1", taken_at=AT)
    assert (snap.source, snap.taken_at, snap.pods) == ("eu-1", AT, 4)
    assert refs_of(POD_LIST) == {
        ("api-7d9f", "api", "container", "registry.example.com", "shop/api", "1.4", PLATFORM),
        ("api-7d9f", "api", "container", "registry.example.com", "shop/api", "1.4", INDEX),
        ("api-7d9f", "migrate", "init", "registry.example.com", "shop/migrate", "7", NGINX),
        ("web-1", "nginx", "container", "docker.io", "library/nginx", "1.25", NGINX),
        ("local-1", "tool", "container", "localhost:5000", "tool", "latest", None),
        ("pending-1", "w", "container", "registry.example.com", "shop/worker", "2", None),
        ("pending-1", "debug", "ephemeral", "docker.io", "library/busybox", "1.36", None),
    }
    images = {r.image for r in snap.refs}
    assert f"docker-pullable://nginx@{NGINX}" in images  # the image as reported is kept
    assert all(r.namespace in ("shop", "web") for r in snap.refs)


def test_a_podlist_with_no_pods() -> None:
    snap = parse_pod_list({"kind": "PodList", "items": []}, source="eu-1", taken_at=AT)
    assert snap.pods == 0 and snap.refs == []


def test_same_digest_twice_in_one_container_is_one_ref() -> None:
    image = f"r.io/a@{NGINX}"
    doc = {"kind": "List", "items": [pod(
        "p", {"containers": [{"name": "a", "image": image}]},
        {"containerStatuses": [{"name": "a", "image": image, "imageID": image}]},
    )]}
    assert len(parse_pod_list(doc, source="s", taken_at=AT).refs) == 1


def _broken(mutate: Any) -> dict[str, Any]:
    doc = copy.deepcopy(POD_LIST)
    mutate(doc)
    return doc


@pytest.mark.parametrize(("doc", "where", "message"), [
    ({"kind": "Pod"}, "kind", "expected List or PodList"),
    ({"items": []}, "kind", "required"),
    ({"kind": "List"}, "items", "required"),
    ({"kind": "List", "items": [[]]}, "items[0]", "must be an object"),
    (_broken(lambda d: d["items"][0].pop("metadata")), "items[0].metadata", "required"),
    (_broken(lambda d: d["items"][1]["spec"]["containers"][0].pop("image")),
     "items[1].spec.containers[0].image", "required"),
    (_broken(lambda d: d["items"][1]["spec"]["containers"][0].update(image="NGINX:1")),
     "items[1].spec.containers[0].image", "must be lowercase"),
    (_broken(lambda d: d["items"][0]["status"].update(containerStatuses={})),
     "items[0].status.containerStatuses", "must be an array"),
    (_broken(lambda d: d["items"][0]["status"]["containerStatuses"][0].update(imageID=5)),
     "items[0].status.containerStatuses[0].imageID", "must be a string"),
])
def test_malformed_pod_lists_name_the_problem(doc: Any, where: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        parse_pod_list(doc, source="eu-1", taken_at=AT)
    assert info.value.detail["where"] == where


def test_source_and_time_are_checked() -> None:
    with pytest.raises(PayloadError, match="source"):
        parse_pod_list(POD_LIST, source="", taken_at=AT)
    with pytest.raises(PayloadError, match="timezone"):
        parse_pod_list(POD_LIST, source="s", taken_at=datetime(2026, 1, 1))
