"""A fleet generated with a byte_scale is real: its manifests push to a real registry and
the registry computes the very digests the telemetry and inventory name."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from recommender.errors import ConfigError, DigestMismatch
from recommender.fleet import FleetSpec, generate, images
from recommender.registry.local import LocalRegistry
from recommender.registry.sync import RegistryClient

from .conftest import Fleet

SCALE = 2e-6


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    spec = FleetSpec(seed=2, repositories=8, days=25, byte_scale=SCALE,
                     mix={"release": 1, "base": 1, "mirror": 1, "ci": 1})
    files = generate(spec, tmp_path_factory.mktemp("scaled"))
    return [orjson.loads(x) for x in files.inventory.read_bytes().splitlines()]


def test_materialized_bytes_hash_to_the_recorded_digests(scaled: list[dict]) -> None:
    kinds = set()
    for rec in scaled:
        item = images.materialize(rec, byte_scale=SCALE)
        kinds.add(rec["kind"])
        assert set(item.blobs) == {b["digest"] for b in rec["blobs"]}
        for b in rec["blobs"]:
            assert len(item.blobs[b["digest"]]) == b["size"]
    assert kinds == {"image", "index", "signature"}
    assert {r["referrer_kind"] for r in scaled} == {None, "signature", "attestation"}


def test_the_wrong_scale_and_virtual_fleets_are_refused(scaled: list[dict],
                                                        fleet: Fleet) -> None:
    image = next(r for r in scaled if r["kind"] == "image")
    with pytest.raises(DigestMismatch, match="another byte_scale"):
        images.materialize(image, byte_scale=SCALE * 100)
    virtual = next(r for r in fleet.inventory if r["kind"] == "image")
    with pytest.raises(ConfigError, match="regenerate it with --byte-scale"):
        images.materialize(virtual, byte_scale=None)
    with pytest.raises(DigestMismatch):
        images.materialize(virtual, byte_scale=SCALE)


@pytest.mark.registry
def test_a_scaled_fleet_pushes_to_a_real_registry(registry: LocalRegistry,
                                                  scaled: list[dict], tmp_path: Path) -> None:
    # the repositories of an index and of an attestation: every kind goes through the registry
    repos = {next(r["repository"] for r in scaled if r["kind"] == "index"),
             next(r["repository"] for r in scaled if r["referrer_kind"] == "attestation")}
    chosen = [r for r in scaled if r["repository"] in repos]
    with RegistryClient(registry.url) as client:
        pushed = images.push_records(client, chosen, byte_scale=SCALE)
        assert pushed == sum(1 for r in chosen if r["deleted_at"] is None)
        for rec in chosen:
            if rec["deleted_at"] is None:
                got = client.get_manifest(rec["repository"], rec["digest"])
                assert got.digest == rec["digest"]
                for tag in rec["tags"]:
                    assert client.resolve(rec["repository"], tag) == rec["digest"]
