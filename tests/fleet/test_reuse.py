"""``--reuse``: each long-gap mechanism shows up in the generated events at ``high``, is rarer
or absent at ``low``, ``medium`` is the generator as it was, and every level is seeded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date

import numpy as np
import pytest

from recommender.cli import main
from recommender.cli.fleet import Reuse
from recommender.errors import ConfigError
from recommender.fleet import FleetSpec
from recommender.fleet.archetypes import ExperimentParams, ReleaseParams
from recommender.fleet.infra import BaseParams, CronParams, MirrorParams
from recommender.fleet.reuse import REUSE_LEVELS, archetype_params

from . import reuse_events as ev

# A year, no CI or daemons (they have no long-gap mechanism and cost the most to simulate).
SPEC = FleetSpec(seed=3, repositories=40, days=365, start=date(2025, 1, 6),
                 mix={"release": 0.25, "cron": 0.15, "base": 0.15, "experiment": 0.3,
                      "mirror": 0.15, "ci": 0.0, "daemon": 0.0})


@pytest.fixture(scope="module")
def fleets() -> dict[str, ev.Seen]:
    return {level: ev.Seen.of(replace(SPEC, reuse=level)) for level in REUSE_LEVELS}


Count = Callable[[ev.Seen], int]

# mechanism: (count in the events, least seen at high)
EXISTING: dict[str, tuple[Count, int]] = {
    "release rolled back >= 8 weeks after superseded": (lambda s: ev.late_rollbacks(s, 56), 5),
    "release pinned by another team >= 60 days": (ev.release_pins, 10),
    "cron repositories running monthly or rarer":
        (lambda s: sum(p >= 28 for p in ev.cron_periods(s)), 5),
    "base versions pulled by builds >= 120 days after superseded":
        (lambda s: ev.base_long_tails(s, 120), 20),
    "experiments revisited after >= 30 idle days": (ev.experiment_revisits, 2),
}
NEW: dict[str, tuple[Count, int]] = {
    "old job version re-run >= 30 days after superseded": (ev.manual_reruns, 1),
    "mirrored version pinned by consumers >= 60 days": (ev.mirror_pins, 5),
    "DR drill restoring a release superseded >= 60 days": (ev.dr_drills, 5),
}


@pytest.mark.parametrize("name", list(EXISTING))
def test_a_mechanism_medium_had_is_more_common_at_high_and_rarer_at_low(
        fleets: dict[str, ev.Seen], name: str) -> None:
    count, least = EXISTING[name]
    low, medium, high = (count(fleets[level]) for level in REUSE_LEVELS)
    assert high >= least, (low, medium, high)
    assert low < medium < high, (low, medium, high)


def test_at_high_some_rollbacks_come_months_after(fleets: dict[str, ev.Seen]) -> None:
    assert ev.late_rollbacks(fleets["high"], 16 * 7) >= 4


@pytest.mark.parametrize("name", list(NEW))
def test_a_mechanism_the_knob_added_appears_at_high_only(
        fleets: dict[str, ev.Seen], name: str) -> None:
    count, least = NEW[name]
    low, medium, high = (count(fleets[level]) for level in REUSE_LEVELS)
    assert (low, medium) == (0, 0) and high >= least, (low, medium, high)


def test_medium_is_the_archetypes_defaults() -> None:
    """Fleets generated before the knob existed are ``medium`` fleets, byte for byte (checked
    by hand against the code before it: the same files for two specs)."""
    assert FleetSpec().reuse == "medium"
    assert archetype_params("medium") == {
        "release": ReleaseParams(), "cron": CronParams(), "base": BaseParams(),
        "mirror": MirrorParams(), "experiment": ExperimentParams()}
    assert FleetSpec.from_json({k: v for k, v in SPEC.to_json().items()
                                if k != "reuse"}).reuse == "medium"  # an older fleet.json


def test_every_level_is_deterministic_per_seed(fleets: dict[str, ev.Seen]) -> None:
    again = ev.Seen.of(replace(SPEC, reuse="high"))
    high = fleets["high"]
    assert high.w.deploys == again.w.deploys
    for name, col in high.cols.items():
        assert np.array_equal(col, again.cols[name]), name
    other = ev.Seen.of(replace(SPEC, reuse="high", seed=4))
    assert other.w.deploys != high.w.deploys


def test_unknown_level_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="unknown reuse level 'extreme'"):
        FleetSpec(reuse="extreme")
    assert {r.value for r in Reuse} == set(REUSE_LEVELS)
    out = tmp_path / "x"
    assert main(["fleet", "generate", "--out", str(out), "--reuse", "extreme"]) != 0
    assert not out.exists()


def test_the_cli_records_the_level_in_fleet_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import orjson

    out = tmp_path / "f"
    assert main(["fleet", "generate", "--out", str(out), "--seed", "2", "--repositories", "3",
                 "--days", "20", "--reuse", "high"]) == 0
    spec = FleetSpec.from_json(orjson.loads((out / "fleet.json").read_bytes())["spec"])
    assert spec.reuse == "high"
