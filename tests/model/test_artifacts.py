"""Model artifacts in the store: any replica loads the promoted model, on SQLite and PostgreSQL.

Contract tests (the ``store`` fixture runs each on both backends): a model trained and promoted
by one process is loaded by another with no files and another working directory, and scores
the same; a sidecar or artifact that does not match is refused; ``model.dir`` is an export.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, insert, select, update

from recommender import config as config_mod
from recommender.errors import ModelError
from recommender.features import build_features
from recommender.model import (
    _prepare,
    current_model,
    export_model,
    fit,
    load_model,
    save_model,
    stored_model,
    train,
)
from recommender.recommend import suggest
from recommender.store import Store, open_store
from recommender.store import tables as t
from recommender.store.db import migrate
from recommender.training import split_by_time

from . import synth
from .builders import at

NOW = at(240)

# What a second replica runs: open the store, load the promoted model, score every unit.
_REPLICA = """
import json, sys
from datetime import datetime
from recommender.features import build_features
from recommender.model import current_model
from recommender.store import Store
store = Store.from_url(sys.argv[1])
model = current_model(store)
with store.connect() as conn:
    frame = build_features(conn, now=datetime.fromisoformat(sys.argv[2]))
print(json.dumps({"id": model.id, "threshold": model.fitted.threshold,
                  "scores": model.fitted.score(frame).tolist()}))
"""


def _config(tmp_path: Path, model_dir: Path | None = None) -> config_mod.Config:
    path = tmp_path / "tagwarden.toml"
    model = f'dir = "{model_dir}"\n' if model_dir else ""
    path.write_text(f'[model]\n{model}snapshot_every = "14d"\n'
                    '[[team]]\nname = "ci"\nrepositories = ["ci/*", "rel/*", "cron/*"]\n'
                    'channel = "C1"\napprovers = ["U1"]\n')
    return config_mod.load(path, env={})


@pytest.fixture
def fleet(store: Store) -> Store:
    synth.generate(store)
    return store


def _tamper(store: Store, model_id: str, **values: object) -> None:
    with store.begin() as conn:
        conn.execute(update(t.models).where(t.models.c.id == model_id).values(**values))


def _row(store: Store, model_id: str):  # type: ignore[no-untyped-def]
    with store.connect() as conn:
        return conn.execute(select(t.models).where(t.models.c.id == model_id)).one()


def test_another_process_without_files_loads_the_promoted_model(
        fleet: Store, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "leader"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = _config(tmp_path)  # no model.dir: nothing is written anywhere but the store
    report = train(fleet, cfg, now=NOW)
    assert report.mode == "model" and report.promoted and report.model_id
    assert not list(tmp_path.rglob("*.joblib")) and not list(tmp_path.rglob("*.json"))
    assert _row(fleet, report.model_id).path is None

    # The same data and seed fit the same model in memory: the reference the replica must match.
    _h, times, data = _prepare(fleet, cfg, NOW, 90.0, NOW)
    reference = fit(data, split_by_time(times), cfg, extra=data.attrs.get("feedback"))
    assert reference.threshold == report.threshold

    replica = tmp_path / "replica"
    replica.mkdir()
    out = subprocess.run([sys.executable, "-c", _REPLICA, store_url, NOW.isoformat()],
                         cwd=replica, capture_output=True, text=True, timeout=120, check=True)
    seen = json.loads(out.stdout)
    with fleet.connect() as conn:
        frame = build_features(conn, now=NOW)
    assert seen["id"] == report.model_id and seen["threshold"] == report.threshold
    assert len(seen["scores"]) == len(frame) > 100
    assert np.array_equal(np.array(seen["scores"]), reference.score(frame))
    assert not list(replica.iterdir())


def test_a_mismatched_sidecar_or_artifact_is_refused(fleet: Store, tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    report = train(fleet, cfg, now=NOW)
    model_id = report.model_id
    assert model_id is not None
    row = _row(fleet, model_id)
    good_sidecar, good_artifact = dict(row.sidecar), bytes(row.artifact)
    assert current_model(fleet) is not None

    other = json.loads(json.dumps(good_sidecar))
    other["versions"]["scikit-learn"] = "0.0.1"
    _tamper(fleet, model_id, sidecar=other)
    with pytest.raises(ModelError, match=rf"model {model_id} refused: scikit-learn 0.0.1 != "):
        current_model(fleet)
    # suggest falls back to the rules and says why.
    items = suggest(fleet, cfg, now=NOW, include_all=True)
    assert items and all(s.mode == "rules-only" for s in items)
    assert "scikit-learn 0.0.1" in items[0].reasons[0]

    other = dict(good_sidecar, code_version="0.0.0+feedfacecafe")
    _tamper(fleet, model_id, sidecar=other)
    with pytest.raises(ModelError, match=r"refused: code 0\.0\.0\+feedfacecafe != "):
        current_model(fleet)

    _tamper(fleet, model_id, sidecar=good_sidecar, artifact=good_artifact[:-1] + b"\0")
    with pytest.raises(ModelError, match="artifact does not match its sidecar's sha256"):
        stored_model(fleet, model_id)

    _tamper(fleet, model_id, artifact=good_artifact)
    assert stored_model(fleet, model_id).fitted.threshold == report.threshold


def test_model_dir_exports_the_files(fleet: Store, tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "exported")
    report = train(fleet, cfg, now=NOW)
    artifact = tmp_path / "exported" / f"{report.model_id}.joblib"
    row = _row(fleet, str(report.model_id))
    assert row.path == str(artifact)
    assert artifact.read_bytes() == bytes(row.artifact)
    assert json.loads(artifact.with_suffix(".json").read_text()) == row.sidecar
    assert load_model(artifact).fitted.threshold == report.threshold

    # An export that cannot be written fails the training before anything is registered.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(ModelError, match="cannot export model"):
        train(fleet, _config(tmp_path, blocker), now=NOW)
    with fleet.connect() as conn:
        assert conn.execute(select(t.models.c.id)).scalars().all() == [report.model_id]


def test_a_row_from_before_the_store_kept_artifacts_loads_from_its_path(
        store_url: str, tmp_path: Path) -> None:
    """Schema 0001 rows name a file; the migration keeps them and they still load."""
    old = open_store(store_url, migrate_schema=False)
    try:
        engine: Engine = old.engine
        migrate(engine, "0001")
        fitted_store = open_store(f"sqlite:///{tmp_path / 'scratch.db'}")
        synth.generate(fitted_store)
        cfg = _config(tmp_path)
        _h, times, data = _prepare(fitted_store, cfg, NOW, 90.0, NOW)
        fitted_store.dispose()
        saved = save_model(fit(data, split_by_time(times), cfg), now=NOW, horizon_days=90.0)
        path = export_model(saved, tmp_path / "legacy")
        with engine.begin() as conn:  # the 0001 columns only
            conn.execute(insert(t.models).values(
                id=saved.id, created_at=NOW, trained_at=NOW, horizon_days=90.0,
                path=str(path), sha256=saved.sidecar["sha256"],
                threshold=saved.sidecar["threshold"], metrics=saved.sidecar["metrics"],
                status="promoted", promoted_at=NOW, note="before 0002"))
        old.migrate()
        old.check_schema()
        loaded = current_model(old)
        assert loaded is not None and loaded.id == saved.id
        assert _row(old, saved.id).artifact is None
        path.unlink()
        with pytest.raises(ModelError, match="model artifact missing"):
            current_model(old)
    finally:
        old.dispose()
