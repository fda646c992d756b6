"""Training, calibration, thresholds, artifacts, promotion, rules-only mode and feedback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from recommender import config as config_mod
from recommender import decisions
from recommender.errors import ModelError
from recommender.features import build_features
from recommender.model import (
    _not_worse,
    backtest,
    choose_threshold,
    current_model,
    load_model,
    make_pipeline,
    stored_model,
    train,
)
from recommender.recommend import suggest
from recommender.store import Store
from recommender.store import tables as t
from recommender.training import Metrics

from . import synth
from .builders import at


def _config(tmp_path: Path, extra: str = "") -> config_mod.Config:
    path = tmp_path / "tagwarden.toml"
    path.write_text(f'[model]\ndir = "{tmp_path / "models"}"\nsnapshot_every = "14d"\n'
                    '[[team]]\nname = "ci"\nrepositories = ["ci/*", "rel/*", "cron/*"]\n'
                    'channel = "C1"\napprovers = ["U1"]\n' + extra)
    return config_mod.load(path, env={})


@pytest.fixture
def fleet(sqlite_store: Store) -> Store:
    synth.generate(sqlite_store)
    return sqlite_store


def test_choose_threshold_reaches_the_target_and_keeps_ties_together() -> None:
    scores = np.array([0.99, 0.98, 0.98, 0.97, 0.5, 0.4])
    dead = np.array([1, 1, 0, 1, 0, 1])
    assert choose_threshold(scores, dead, 1.0) == 0.99  # the tie at 0.98 holds a miss
    assert choose_threshold(scores, dead, 0.75) == 0.97
    assert choose_threshold(np.array([0.9]), np.array([0]), 0.5) > 1  # suggest nothing
    assert choose_threshold(np.zeros(0), np.zeros(0), 0.9) > 1


def test_pipeline_keeps_the_estimator_contract() -> None:
    pipe = make_pipeline(random_state=7)
    params = pipe.get_params()
    assert params["trees__random_state"] == 7
    assert not [k for k in vars(pipe.named_steps["trees"]) if k.endswith("_")
                and not k.startswith("_")]  # nothing learned before fit


def test_not_worse_compares_on_the_same_validation() -> None:
    good = Metrics(1000, 1, 0.999, 0.9, 0.95, 1e12, 1e12)
    fewer_bytes = Metrics(900, 0, 1.0, 0.8, 0.85, 8e11, 1e12)
    sloppy = Metrics(1200, 30, 0.975, 0.95, 0.99, 1.2e12, 1e12)
    assert _not_worse(good, good, 0.999)
    assert not _not_worse(fewer_bytes, good, 0.999)
    assert not _not_worse(sloppy, good, 0.999)


def test_train_saves_registers_and_promotes(fleet: Store, tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    first = train(fleet, cfg, now=at(240))
    assert first.mode == "model" and first.promoted and first.new is not None
    artifact = tmp_path / "models" / f"{first.model_id}.joblib"
    sidecar = json.loads(artifact.with_suffix(".json").read_text())
    assert sidecar["features"] and sidecar["versions"]["scikit-learn"]
    assert sidecar["windows"]["train"] < sidecar["windows"]["validate"]
    assert sidecar["metrics"]["validation"]["precision"] >= 0.999
    second = train(fleet, cfg, now=at(240))
    # Same data, same seed: the same model, so not worse, promoted; the first retires.
    assert second.promoted and second.current_id == first.model_id
    assert second.current is not None and second.new == second.current
    with fleet.connect() as conn:
        rows = dict(conn.execute(select(t.models.c.id, t.models.c.status)).all())
    assert rows == {first.model_id: "retired", second.model_id: "promoted"}
    loaded = current_model(fleet)
    assert loaded is not None and loaded.id == second.model_id

    # An exported sidecar from other library versions is refused (the store's copy is
    # tested in test_artifacts.py).
    side = artifact.with_name(f"{second.model_id}.json")
    data = json.loads(side.read_text())
    data["versions"]["scikit-learn"] = "0.0.1"
    side.write_text(json.dumps(data))
    with pytest.raises(ModelError, match="scikit-learn 0.0.1"):
        load_model(artifact.with_name(f"{second.model_id}.joblib"))


def test_short_history_means_rules_only_everywhere(sqlite_store: Store, tmp_path: Path) -> None:
    synth.generate(sqlite_store, days=60)
    cfg = _config(tmp_path)
    report = train(sqlite_store, cfg, now=at(60))
    assert report.mode == "rules-only" and "rules-only mode" in report.message
    items = suggest(sqlite_store, cfg, now=at(60), include_all=True)
    assert items and all(s.reasons[0].startswith("rules-only mode") for s in items)
    # Conservative: nothing idle for twice the horizon exists yet, so nothing is suggested.
    assert not any(s.suggested for s in items)


def test_backtest_reports_model_and_tuned_rules(fleet: Store, tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    report = backtest(fleet, cfg, at=at(150), now=at(240))
    names = [r["name"] for r in report.rows]
    assert names == ["model", "idle rule", "idle (whole)", "keep rule", "idle alone"]
    for row in report.rows:
        assert 0 <= row["precision"] <= 1 and row["dead_bytes"] > 0
        assert row["suggested"] >= row["false_positives"]
    with pytest.raises(ModelError, match="has not elapsed"):
        backtest(fleet, cfg, at=at(200), now=at(240))


def test_denied_suggestions_teach_the_model(fleet: Store, tmp_path: Path) -> None:
    """Feedback: denials become weighted "still used" labels in the next training."""
    cfg = _config(tmp_path, "")
    before = train(fleet, cfg, now=at(240))
    items = [s for s in suggest(fleet, cfg, now=at(200)) if s.repository == "ci/app0"]
    assert len(items) > 10
    batches = decisions.record_batches(fleet, items, now=at(200), config=cfg)
    for batch in batches:
        decisions.deny(fleet, batch_id=batch.id, user_id="U1", now=at(200.1),
                       reason="we bisect these")
    after = train(fleet, cfg, now=at(240))
    old = stored_model(fleet, str(before.model_id)).fitted
    new = stored_model(fleet, str(after.model_id)).fitted
    with fleet.connect() as conn:
        frame = build_features(conn, now=at(200))
    denied = frame[frame["digest"].isin({s.digest for s in items})]
    assert len(denied) == len(items)
    assert new.score(denied).mean() < old.score(denied).mean() - 0.01
