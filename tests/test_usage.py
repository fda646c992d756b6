"""Usage classification, table-tested with user agents real clients send."""

from __future__ import annotations

import pytest

from recommender import config as config_mod
from recommender.collector.events import USAGE_CLASSES
from recommender.errors import ConfigError
from recommender.usage import Classifier, is_manifest_media_type

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

AGENTS = [
    # real clients: use
    ("docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.5.0-14-generic os/linux "
     "arch/amd64 UpstreamClient(Docker-Client/24.0.7 \\(linux\\))", "use"),
    ("docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.1.0-13-amd64 os/linux "
     "arch/amd64 UpstreamClient(Docker-Client/20.10.24+dfsg1 \\(linux\\))", "use"),
    ("containerd/v1.7.11", "use"),
    ("containerd/1.6.24", "use"),
    ("cri-o/1.28.1 go/go1.20.10 os/linux arch/amd64", "use"),
    ("containers/5.29.1 (github.com/containers/image)", "use"),  # podman
    ("Buildah/1.33.2 (github.com/containers/image)", "use"),
    ("buildkit/v0.12.4", "use"),
    ("kaniko/v1.19.2 go-containerregistry/v0.17.0", "use"),
    ("nerdctl/1.7.2 containerd/v1.7.11", "use"),
    ("cosign/v2.2.2 (linux; amd64)", "use"),
    ("curl/7.38.0", "use"),  # unknown client: the safe side
    ("", "use"),
    (None, "use"),
    # scanners
    ("trivy/0.48.1", "scanner"),
    ("Trivy/0.45.0 (linux; amd64) go-containerregistry/v0.16.1", "scanner"),
    ("clair/v4.7.2", "scanner"),
    ("grype/0.74.0", "scanner"),
    ("syft/0.99.0", "scanner"),
    ("Anchore-Engine/1.0.2", "scanner"),
    ("snyk-container/1.1266.0", "scanner"),
    ("Twistlock/32.00.159", "scanner"),
    ("docker-scout/1.2.0", "scanner"),
    ("neuvector-scanner/5.2", "scanner"),
    # replication and mirroring
    ("skopeo/1.14.0", "replication"),
    ("regclient/regsync (v0.5.6)", "replication"),
    ("harbor-registry-client", "replication"),
    ("dragonfly/v2.1.30", "replication"),
    # janitors
    ("regclient/regbot (v0.5.6)", "janitor"),
    ("regclient/regctl (v0.5.6)", "janitor"),
    ("crane/v0.17.0 go-containerregistry/v0.17.0", "janitor"),
    ("gcrane/v0.17.0", "janitor"),
    # ourselves
    ("tagwarden/0.1.0 (+https://example.org)", "self"),
]


@pytest.mark.parametrize(("agent", "expected"), AGENTS)
def test_user_agents(agent: str | None, expected: str) -> None:
    c = Classifier()
    assert c.classify(user_agent=agent, actor=None, method="GET", media_type=MANIFEST) == expected


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_head_by_a_real_client_is_use(method: str) -> None:
    c = Classifier()
    got = c.classify(user_agent="containerd/v1.7.11", actor=None, method=method,
                     media_type=MANIFEST)
    assert got == "use"


@pytest.mark.parametrize(("actor", "expected"), [
    ("robot$library+scanner-Trivy-51fe8548-bbe5-11ed-9870-0242ac120002", "scanner"),
    ("robot$harbor+Clair-3c9e2d", "scanner"),
    ("robot$shop+replication", "replication"),
    ("harbor-jobservice", "janitor"),
    ("robot$ci-deployer", "use"),
    ("admin", "use"),
])
def test_actors(actor: str, expected: str) -> None:
    assert Classifier().classify(user_agent=None, actor=actor) == expected


@pytest.mark.parametrize(("media_type", "url", "expected"), [
    ("application/vnd.docker.image.rootfs.diff.tar.gzip", None, "blob"),
    ("application/vnd.oci.image.layer.v1.tar+gzip", None, "blob"),
    ("application/vnd.oci.image.config.v1+json", None, "blob"),
    ("application/octet-stream", None, "blob"),
    ("application/vnd.oci.image.index.v1+json", None, "use"),
    ("application/vnd.docker.distribution.manifest.list.v2+json", None, "use"),
    ("application/vnd.docker.distribution.manifest.v1+prettyjws", None, "use"),
    (None, "http://r:5000/v2/a/blobs/sha256:" + "a" * 64, "blob"),
    (None, "http://r:5000/v2/a/manifests/sha256:" + "a" * 64, "use"),
])
def test_blobs_are_not_manifest_use(media_type: str | None, url: str | None,
                                    expected: str) -> None:
    got = Classifier().classify(user_agent="docker/24.0.7", actor=None, media_type=media_type,
                                url=url)
    assert got == expected


def test_a_failed_request_is_failed_whoever_made_it() -> None:
    c = Classifier()
    assert c.classify(user_agent="docker/24.0.7", actor=None, status_ok=False) == "failed"
    assert c.classify(user_agent="trivy/0.48.1", actor=None, status_ok=False) == "failed"


def test_every_answer_is_a_usage_class() -> None:
    c = Classifier()
    answers = {c.classify(user_agent=a, actor=None) for a, _ in AGENTS}
    assert answers <= set(USAGE_CLASSES)


def test_configured_patterns_add_to_the_built_in_ones() -> None:
    cfg = config_mod.load(None, env={}, overrides={
        "usage.scanner_agents": ["^acme-scan/"],
        "usage.replication_agents": ["mirror-bot"],
        "usage.janitor_agents": ["sweeper"],
        "usage.use_agents": ["^trivy/0\\.1\\."],
        "usage.scanner_actors": ["^svc-sec-"],
        "usage.replication_actors": ["^svc-dr-"],
    })
    c = Classifier.from_config(cfg)
    assert c.classify(user_agent="ACME-Scan/2.0", actor=None) == "scanner"
    assert c.classify(user_agent="our-mirror-bot/1", actor=None) == "replication"
    assert c.classify(user_agent="sweeper", actor=None) == "janitor"
    # use_agents is checked first: it can reclaim a client a built-in pattern calls a scanner
    assert c.classify(user_agent="trivy/0.1.2", actor=None) == "use"
    assert c.classify(user_agent="trivy/0.48.1", actor=None) == "scanner"
    assert c.classify(user_agent=None, actor="svc-sec-robot") == "scanner"
    assert c.classify(user_agent=None, actor="svc-dr-sync") == "replication"
    # built-ins still apply
    assert c.classify(user_agent="skopeo/1.14.0", actor=None) == "replication"


def test_an_invalid_pattern_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="usage.scanner_agents") as info:
        Classifier(scanner_agents=["(unclosed"])
    assert info.value.detail["pattern"] == "(unclosed"


def test_the_cache_gives_the_same_answers_and_stays_bounded() -> None:
    c = Classifier()
    for i in range(Classifier._CACHE_MAX + 10):
        assert c.classify(user_agent=f"trivy/{i}", actor=None) == "scanner"
    assert len(c._cache) <= Classifier._CACHE_MAX
    assert c.classify(user_agent="trivy/1", actor=None) == "scanner"


def test_manifest_media_types() -> None:
    assert is_manifest_media_type("application/vnd.oci.image.manifest.v1+json")
    assert is_manifest_media_type("application/vnd.docker.distribution.manifest.v2+json; q=1")
    assert not is_manifest_media_type("application/vnd.in-toto+json")
    assert not is_manifest_media_type(None)
