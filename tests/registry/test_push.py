"""Built images are real and reproducible: same seed, same bytes; layers are tars whose
digests the config lists as diff_ids; referrers name their subject."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime

from recommender.registry import mediatypes as mt
from recommender.registry.models import digest_of
from recommender.registry.push import build_image, build_index, layer_tar


def test_same_seed_same_digest_other_seed_other_digest():
    a = build_image(seed="x", layers=(100, 200))
    assert a.manifest == build_image(seed="x", layers=(100, 200)).manifest
    assert a.digest != build_image(seed="y", layers=(100, 200)).digest
    assert a.digest != build_image(seed="x", layers=(100, 200),
                                   created=datetime(2025, 1, 1, tzinfo=UTC)).digest


def test_layers_are_tars_listed_as_diff_ids_in_the_config():
    image = build_image(seed="x", layers=(300, layer_tar("shared", 50)), labels={"a": "b"})
    doc = json.loads(image.manifest)
    assert doc["mediaType"] == mt.OCI_MANIFEST and doc["schemaVersion"] == 2
    (_, config), *layers = image.blobs
    config_doc = json.loads(config)
    assert config_doc["config"]["Labels"] == {"a": "b"}
    assert config_doc["created"] == "2024-01-01T00:00:00.000000Z"
    assert config_doc["rootfs"]["diff_ids"] == [digest_of(data) for _, data in layers]
    assert doc["config"]["digest"] == digest_of(config)
    sizes = []
    for _, data in layers:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            sizes.extend(member.size for member in tar.getmembers())
    assert sizes == [300, 50]
    assert layers[1][1] == layer_tar("shared", 50)  # a prepared layer is used as is


def test_index_lists_platform_children_and_subject_is_recorded():
    amd = build_image(seed=("s", "linux/amd64"), platform="linux/amd64")
    arm = build_image(seed=("s", "linux/arm64"), platform="linux/arm64")
    index = json.loads(build_index([(amd, "linux/amd64"), (arm, "linux/arm64")]))
    assert [m["digest"] for m in index["manifests"]] == [amd.digest, arm.digest]
    assert index["manifests"][1]["platform"] == {"architecture": "arm64", "os": "linux"}
    referrer = build_image(seed="r", subject=(mt.OCI_MANIFEST, amd.digest, len(amd.manifest)),
                           artifact_type="application/spdx+json")
    doc = json.loads(referrer.manifest)
    assert doc["subject"]["digest"] == amd.digest
    assert doc["artifactType"] == "application/spdx+json"


def test_media_type_helpers():
    assert mt.MANIFEST_ACCEPT[:4] == (mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST,
                                      mt.DOCKER_MANIFEST)
    assert mt.MANIFEST_ACCEPT[-2:] == (mt.DOCKER_SCHEMA1_SIGNED, mt.DOCKER_SCHEMA1)
    assert mt.is_index(mt.DOCKER_MANIFEST_LIST + "; charset=utf-8")
    assert mt.is_manifest(mt.DOCKER_MANIFEST) and not mt.is_manifest(mt.OCI_INDEX)
    assert mt.is_config(mt.DOCKER_CONFIG) and not mt.is_layer(mt.OCI_CONFIG)
    assert mt.is_layer(mt.DOCKER_LAYER) and mt.is_layer("application/spdx+json")
    assert not mt.is_layer(None) and mt.normalize(None) == ""
