"""One small fleet with every archetype, generated once for the module's tests."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from recommender.fleet import FleetFiles, FleetSpec, generate


@dataclass
class Fleet:
    files: FleetFiles
    envelopes: list[dict[str, Any]]
    deploys: list[dict[str, Any]]
    snapshots: list[dict[str, Any]]
    inventory: list[dict[str, Any]]
    meta: dict[str, Any]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for env in self.envelopes for e in env["events"]]

    def by_digest(self) -> dict[str, dict[str, Any]]:
        return {r["digest"]: r for r in self.inventory}


SMALL = FleetSpec(seed=11, repositories=16, days=150, start=date(2025, 3, 3),
                  duplicate_rate=0.02, snapshot_every_days=2)


def read_fleet(files: FleetFiles) -> Fleet:
    with gzip.open(files.distribution, "rb") as fh:
        envelopes = [orjson.loads(line) for line in fh]
    return Fleet(
        files,
        envelopes,
        [orjson.loads(x) for x in files.deploys.read_bytes().splitlines()],
        [orjson.loads(x) for x in files.pods.read_bytes().splitlines()],
        [orjson.loads(x) for x in files.inventory.read_bytes().splitlines()],
        orjson.loads(files.fleet.read_bytes()),
    )


@pytest.fixture(scope="session")
def small_fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fleet")
    generate(SMALL, out)
    return out


@pytest.fixture(scope="session")
def fleet(small_fleet_dir: Path) -> Fleet:
    d = small_fleet_dir
    meta = orjson.loads((d / "fleet.json").read_bytes())
    files = FleetFiles(d, d / "distribution.jsonl.gz", d / "deploys.jsonl", d / "pods.jsonl",
                       d / "inventory.jsonl", d / "fleet.json", meta["summary"])
    return read_fleet(files)
