"""Threshold efficiency on hand-made cases, and the weekly runs a backtest reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recommender import config as config_mod
from recommender.evaluation import threshold_efficiency
from recommender.model import backtest
from recommender.store import Store

from . import synth
from .builders import at

# Five eligible units, best score first; the third is used again.
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
DEAD = np.array([1, 1, 0, 1, 1])
SIZES = np.array([100.0, 200.0, 50.0, 400.0, 800.0])


def test_efficiency_against_the_best_threshold_chosen_in_hindsight() -> None:
    # At 0.999 only the top two come without the used unit: 100 + 200 = 300 bytes at best.
    at_085 = threshold_efficiency(SCORES, DEAD, SIZES, 0.85, 0.999)
    assert at_085.best_bytes == 300 and at_085.best_threshold == 0.8
    assert at_085.operating_bytes == 100 and at_085.value == pytest.approx(1 / 3)
    assert threshold_efficiency(SCORES, DEAD, SIZES, 0.8, 0.999).value == 1.0
    # A threshold past the used unit counts its unused bytes (100+200+400+800) over 300: only
    # a threshold that misses the target can exceed 1.
    assert threshold_efficiency(SCORES, DEAD, SIZES, 0.5, 0.999).value == pytest.approx(5.0)


def test_efficiency_takes_the_most_bytes_not_the_first_threshold_reaching_the_target() -> None:
    # At 0.75: top 2 (precision 1), top 4 (3/4) and all 5 (4/5) qualify; top 3 (2/3) does not.
    eff = threshold_efficiency(SCORES, DEAD, SIZES, 0.8, 0.75)
    assert eff.best_bytes == 1500 and eff.best_threshold == 0.5
    assert eff.value == pytest.approx(300 / 1500)


def test_tied_scores_move_together() -> None:
    # The unused 20-byte unit shares its score with a used one: at 0.999 it cannot be had.
    eff = threshold_efficiency(np.array([0.9, 0.8, 0.8]), np.array([1, 1, 0]),
                               np.array([10.0, 20.0, 30.0]), 0.9, 0.999)
    assert eff.best_bytes == 10 and eff.value == 1.0


def test_efficiency_is_none_when_nothing_can_be_reached() -> None:
    empty = threshold_efficiency(np.zeros(0), np.zeros(0), np.zeros(0), 0.9, 0.999)
    assert empty.value is None and empty.reason == "no eligible unit"
    # Every unit used again: no unused bytes at all.
    used = threshold_efficiency(SCORES, np.zeros(5), SIZES, 0.9, 0.999)
    assert used.value is None and used.reason == "no unused bytes"
    # Unused units whose size is unknown (0) are no bytes either.
    unsized = threshold_efficiency(SCORES, DEAD, np.zeros(5), 0.9, 0.999)
    assert unsized.value is None and unsized.reason == "no unused bytes"
    # The best-scored unit is used again: no threshold reaches 0.999 (top 1: 0, top 2: 1/2).
    worst_first = threshold_efficiency(np.array([0.9, 0.5]), np.array([0, 1]),
                                       np.array([5.0, 7.0]), 0.4, 0.999)
    assert worst_first.value is None and "no threshold reaches" in worst_first.reason
    assert worst_first.operating_bytes == 7 and worst_first.best_bytes == 0


def test_backtest_reports_efficiency_and_weekly_runs(sqlite_store: Store,
                                                     tmp_path: Path) -> None:
    synth.generate(sqlite_store)
    path = tmp_path / "tagwarden.toml"
    path.write_text('[model]\nsnapshot_every = "14d"\n')
    cfg = config_mod.load(path, env={})
    report = backtest(sqlite_store, cfg, at=at(150), now=at(240))
    model, rule = report.row("model"), report.row("idle rule")
    assert model is not None and rule is not None and report.efficiency is not None
    # The operating bytes are the model row's reclaimed bytes, seen from another side.
    ours = model["bytes_recall"] * model["dead_bytes"]
    theirs = rule["bytes_recall"] * rule["dead_bytes"]
    assert report.efficiency.operating_bytes == pytest.approx(ours)
    assert report.ratio() == (pytest.approx(ours / theirs) if theirs else float("inf"))
    horizon = cfg["model.horizon"].total_seconds() / 86400
    for name, row in (("model", model), ("idle rule", rule)):
        weekly = report.weekly[name]
        assert len(weekly.runs) == int(np.ceil(horizon / 7))
        # The first run is the backtest instant itself, judged over the whole horizon.
        first = weekly.runs[0]
        assert (first.suggested, first.false_positives) == (row["suggested"],
                                                            row["false_positives"])
        assert [r.window_days for r in weekly.runs] == [horizon - 7 * k
                                                        for k in range(len(weekly.runs))]
    summary = report.as_dict()["weekly"]["model"]
    assert summary["runs"] == len(report.weekly["model"].runs)
    assert summary["later_suggested"] == sum(r.suggested for r in report.weekly["model"].later)
