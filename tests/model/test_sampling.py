"""Sampled training snapshots: every used unit kept, the unused drawn by seed and re-weighted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender import config as config_mod
from recommender.features import days, load_history
from recommender.model import train
from recommender.store import Store
from recommender.training import (
    RuleBaseline,
    build_dataset,
    metrics,
    sample_unused,
    snapshot_times,
    split_by_time,
)

from . import synth
from .builders import at

HORIZON = 90.0


def _config(tmp_path: Path, max_rows: int) -> config_mod.Config:
    path = tmp_path / "tagwarden.toml"
    path.write_text(f'[model]\nsnapshot_every = "14d"\nmax_train_rows = {max_rows}\n')
    return config_mod.load(path, env={})


@pytest.fixture
def history(sqlite_store: Store):  # type: ignore[no-untyped-def]
    synth.generate(sqlite_store)
    with sqlite_store.connect() as conn:
        return load_history(conn, until=at(240))


def _times(h) -> list[float]:  # type: ignore[no-untyped-def]
    return snapshot_times(h, now=days(at(240)), horizon=HORIZON, every=14.0)


def test_a_sampled_snapshot_keeps_the_used_and_the_weight_of_the_unused(
        history, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _config(tmp_path, 1000)
    times = _times(history)
    train_times = split_by_time(times).train
    whole = build_dataset(history, cfg, times, HORIZON)
    sampled = build_dataset(history, cfg, times, HORIZON, sample=train_times,
                            rows_per_snapshot=40, seed=3)
    thinned = 0
    for t in times:
        full = whole[whole["at"] == t]
        part = sampled[sampled["at"] == t]
        if t not in train_times:
            pd.testing.assert_frame_equal(full.reset_index(drop=True),
                                          part.reset_index(drop=True))
            continue
        used = full[full["dead"] == 0]
        # Every used unit is there, unchanged, with its weight of 1.
        kept_used = part[part["dead"] == 0]
        assert set(kept_used["digest"]) == set(used["digest"])
        assert (kept_used["weight"] == 1.0).all()
        # The unused ones that were drawn stand for all of them.
        assert part["weight"].sum() == pytest.approx(len(full))
        if len(part) < len(full):
            thinned += 1
            assert (part["dead"] == 1).sum() == max(40 - len(used), 20)
    assert thinned >= 2  # the test means something: snapshots were actually sampled


def test_the_draw_is_the_seed_s(history, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _config(tmp_path, 1000)
    times = _times(history)
    train_times = split_by_time(times).train

    def draw(seed: int) -> pd.DataFrame:
        return build_dataset(history, cfg, times, HORIZON, sample=train_times,
                             rows_per_snapshot=40, seed=seed)

    pd.testing.assert_frame_equal(draw(3), draw(3))
    assert not draw(3)["digest"].equals(draw(4)["digest"])


def test_sample_unused_leaves_a_small_snapshot_alone() -> None:
    frame = pd.DataFrame({"dead": [1, 0, 1], "weight": [1.0, 1.0, 1.0]})
    out = sample_unused(frame, 10, np.random.default_rng(0))
    assert out is frame


def test_weighted_rows_count_as_their_copies() -> None:
    """A row of weight 3 is three rows to the metrics, as the rule tuning reads them."""
    frame = pd.DataFrame({"eligible": [True] * 4, "dead": [1, 1, 0, 1],
                          "bytes": [10.0, 20.0, 5.0, 7.0], "weight": [3.0, 1.0, 1.0, 1.0],
                          "idle_days": [100.0, 50.0, 100.0, 5.0], "running": [0.0] * 4})
    copies = pd.concat([frame.iloc[[0, 0, 0]], frame.iloc[1:]]).assign(weight=1.0)
    rule = RuleBaseline("idle", 30.0)
    weighted = metrics(frame, rule.suggest(frame))
    assert weighted == metrics(copies, rule.suggest(copies))
    assert weighted.suggested == 5 and weighted.false_positives == 1
    assert weighted.precision == pytest.approx(0.8)
    assert weighted.bytes_recall == pytest.approx(50.0 / 57.0)


def test_a_sampled_training_still_trains_and_a_short_history_is_rules_only(
        sqlite_store: Store, tmp_path: Path) -> None:
    synth.generate(sqlite_store)
    cfg = _config(tmp_path, 1000)  # far fewer rows than the snapshots hold
    report = train(sqlite_store, cfg, now=at(240))
    assert report.mode == "model" and report.new is not None
    assert report.new.precision >= 0.999

    short = tmp_path / "short"
    short.mkdir()
    from recommender.store import open_store

    other = open_store(f"sqlite:///{short / 'store.db'}")
    try:
        synth.generate(other, days=60)
        report = train(other, cfg, now=at(60))
        assert report.mode == "rules-only" and "rules-only mode" in report.message
    finally:
        other.dispose()
