"""The Amazon ECR backend against ECR's API on loopback (moto's server behind tests/support/ecr)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from recommender.config import load
from recommender.errors import ConfigError, NotFound
from recommender.registry import mediatypes as mt
from recommender.registry.ecr import DeleteOrderError, EcrRegistry, deletion_waves
from tests.support.ecr import EcrServer


@pytest.fixture
def backend(ecr: EcrServer) -> EcrRegistry:
    return EcrRegistry(ecr.client())


def test_listings_follow_every_page(ecr: EcrServer, backend: EcrRegistry) -> None:
    for i in range(5):
        ecr.create_repository(f"team/app{i}")
    pushed = {ecr.push_image("team/app0", f"v{i}", seed=f"s{i}").digest for i in range(23)}
    ecr.page_limit = 4

    assert backend.repositories() == [f"team/app{i}" for i in range(5)]
    images = backend.list_images("team/app0")
    assert {i.digest for i in images} == pushed
    assert len(images) == 23  # no page read twice
    assert backend.list_tags("team/app0") == sorted(f"v{i}" for i in range(23))
    assert ecr.calls.count("DescribeImages") >= 2 * 6  # two listings of 6 pages each


def test_images_carry_tags_sizes_types_and_recorded_pulls(ecr: EcrServer,
                                                          backend: EcrRegistry) -> None:
    ecr.create_repository("team/app")
    amd = ecr.push_image("team/app", None, seed="amd", layer_sizes=(300, 200))
    arm = ecr.push_image("team/app", None, seed="arm", layer_sizes=(700,))
    index = ecr.push_index("team/app", "1.0", [(amd, "linux/amd64"), (arm, "linux/arm64")])
    pulled = datetime(2026, 11, 30, 4, 0, tzinfo=UTC)
    ecr.record_pull("team/app", index.digest, pulled)

    by_digest = {i.digest: i for i in backend.list_images("team/app")}

    assert by_digest[index.digest].tags == ("1.0",)
    assert mt.is_index(by_digest[index.digest].media_type)
    assert by_digest[index.digest].last_pulled_at == pulled
    assert by_digest[index.digest].size == 700  # ECR: the largest platform's
    assert by_digest[amd.digest].tags == ()
    assert by_digest[amd.digest].size == 500
    assert by_digest[amd.digest].last_pulled_at is None
    assert by_digest[amd.digest].media_type == mt.OCI_MANIFEST
    assert by_digest[amd.digest].pushed_at is not None


def test_manifests_give_children_and_subjects(ecr: EcrServer, backend: EcrRegistry) -> None:
    ecr.create_repository("team/app")
    amd = ecr.push_image("team/app", None, seed="amd")
    arm = ecr.push_image("team/app", None, seed="arm")
    index = ecr.push_index("team/app", "1.0", [(amd, "linux/amd64"), (arm, "linux/arm64")])
    signature = ecr.push_signature("team/app", index)

    got = backend.manifests("team/app", [index.digest, signature.digest, "1.0",
                                         "sha256:" + "0" * 64])

    assert set(got) == {index.digest, signature.digest, "1.0"}  # the unknown one left out
    assert got["1.0"].digest == index.digest
    assert got[index.digest].is_index
    assert [c["digest"] for c in got[index.digest].children] == [amd.digest, arm.digest]
    assert got[signature.digest].subject == index.digest
    assert got[signature.digest].body == signature.body
    assert backend.resolve("team/app", "1.0") == index.digest
    assert backend.head_manifest("team/app", "sha256:" + "0" * 64) is None
    with pytest.raises(NotFound):
        backend.resolve("team/app", "2.0")
    with pytest.raises(NotFound):
        backend.get_manifest("team/app", "2.0")


def test_batches_of_a_hundred(ecr: EcrServer, backend: EcrRegistry) -> None:
    ecr.create_repository("team/app")
    pushed = [ecr.push_image("team/app", f"v{i}", seed=f"s{i}").digest for i in range(230)]

    assert set(backend.manifests("team/app", pushed)) == set(pushed)
    assert ecr.calls.count("BatchGetImage") == 3
    report = backend.delete_report("team/app", pushed[:205])

    assert sorted(report.deleted) == sorted(pushed[:205])
    assert report.calls == 3
    assert ecr.digests("team/app") == set(pushed[205:])


def test_an_index_goes_before_its_children_and_a_subject_before_its_referrers(
        ecr: EcrServer, backend: EcrRegistry) -> None:
    ecr.create_repository("team/app")
    amd = ecr.push_image("team/app", None, seed="amd")
    arm = ecr.push_image("team/app", None, seed="arm")
    index = ecr.push_index("team/app", "1.0", [(amd, "linux/amd64"), (arm, "linux/arm64")])
    signature = ecr.push_signature("team/app", index)
    kept = ecr.push_image("team/app", "2.0", seed="kept")

    # Asked children first: ECR would refuse them while the index lists them.
    asked = [amd.digest, signature.digest, arm.digest, index.digest]
    mark = len(ecr.calls)
    outcomes = backend.delete_many("team/app", asked)

    assert [(d.digest, d.outcome) for d in outcomes] == [(d, "deleted") for d in asked]
    # What lists what, then the index alone, then its children and its signature.
    assert ecr.calls[mark:] == ["BatchGetImage", "BatchDeleteImage", "BatchDeleteImage"]

    assert ecr.digests("team/app") == {kept.digest}


def test_a_child_deleted_before_its_index_is_refused_with_the_data(
        ecr: EcrServer, backend: EcrRegistry) -> None:
    ecr.create_repository("team/app")
    amd = ecr.push_image("team/app", None, seed="amd")
    index = ecr.push_index("team/app", "1.0", [(amd, "linux/amd64")])

    with pytest.raises(DeleteOrderError) as refused:
        backend.delete_manifest("team/app", amd.digest)

    assert refused.value.code == "ImageReferencedByManifestList"
    assert refused.value.detail["digest"] == amd.digest
    assert refused.value.detail["repository"] == "team/app"
    assert index.digest in refused.value.detail["reason"]
    assert ecr.digests("team/app") == {amd.digest, index.digest}


def test_image_not_found_is_deletion_by_other_hands(ecr: EcrServer,
                                                    backend: EcrRegistry) -> None:
    ecr.create_repository("team/app")
    one = ecr.push_image("team/app", "1", seed="one")
    two = ecr.push_image("team/app", "2", seed="two")
    ecr.moto_client().batch_delete_image(repositoryName="team/app",
                                         imageIds=[{"imageDigest": one.digest}])

    report = backend.delete_report("team/app", [one.digest, two.digest])

    assert report.already_gone == [one.digest]
    assert report.deleted == [two.digest]
    assert report.failures == []
    report.raise_for_failures()  # nothing to raise
    with pytest.raises(NotFound):
        backend.delete_manifest("team/app", two.digest)


def test_calls_are_observed_for_the_audit(ecr: EcrServer, backend: EcrRegistry) -> None:
    ecr.create_repository("team/app")
    seen: list[tuple[str, str, int | str]] = []

    class Recorder:
        def record(self, operation: str, target: str, status: int | str,
                   retry_after: float | None = None) -> None:
            seen.append((operation, target, status))

    backend.recorder = Recorder()
    one = ecr.push_image("team/app", "1", seed="one")

    backend.head_manifest("team/app", "nope")
    backend.repositories()
    gone = "sha256:" + "0" * 64
    backend.delete_report("team/app", [one.digest, gone])

    assert seen == [("DescribeImages", "ecr:team/app", 400),
                    ("DescribeRepositories", "ecr:", 200),
                    ("BatchGetImage", "ecr:team/app", "ImageNotFound"),
                    ("BatchDeleteImage", "ecr:team/app", "ImageNotFound")]


def test_unknown_repository_is_not_found(backend: EcrRegistry) -> None:
    with pytest.raises(NotFound) as missing:
        backend.list_images("team/none")
    assert missing.value.code == "RepositoryNotFoundException"
    assert missing.value.detail["repository"] == "team/none"


def test_from_config_reads_the_settings(ecr: EcrServer, tmp_path: Path) -> None:
    ecr.create_repository("team/app")
    path = tmp_path / "tagwarden.toml"
    path.write_text(f'[registry]\nregion = "eu-west-1"\nendpoint_url = "{ecr.url}"\n')

    with EcrRegistry.from_config(load(path, env={})) as backend:
        assert backend.client.meta.region_name == "eu-west-1"
        assert backend.repositories() == []  # moto keeps each region apart

    path.write_text(f'[registry]\nregion = "us-east-1"\nendpoint_url = "{ecr.url}"\n'
                    'registry_id = "123456789012"\n')
    with EcrRegistry.from_config(load(path, env={})) as backend:
        assert backend.repositories() == ["team/app"]


def test_from_config_without_a_region_names_the_setting(ecr: EcrServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    path = tmp_path / "tagwarden.toml"
    path.write_text(f'[registry]\nendpoint_url = "{ecr.url}"\n')

    with pytest.raises(ConfigError) as error:
        EcrRegistry.from_config(load(path, env={}))
    assert error.value.detail["setting"] == "registry.region"


def test_deletion_waves_level_by_level() -> None:
    # An index of indexes: each level waits for the one above it.
    from recommender.registry.models import Manifest

    def index(digest: str, children: list[str]) -> Manifest:
        parsed = {"mediaType": mt.OCI_INDEX, "manifests": [{"digest": c} for c in children]}
        return Manifest(digest, mt.OCI_INDEX, b"", parsed)

    known = {"sha256:top": index("sha256:top", ["sha256:mid"]),
             "sha256:mid": index("sha256:mid", ["sha256:leaf"])}
    assert deletion_waves(["sha256:leaf", "sha256:mid", "sha256:top", "sha256:other"],
                          known) == [["sha256:top", "sha256:other"], ["sha256:mid"],
                                     ["sha256:leaf"]]
