"""Model artifacts and the model registry: a trained model kept in the store itself.

An artifact is the joblib bytes of the fitted estimator and its threshold, plus a JSON
*sidecar* (training window, features, metrics, library and code versions, the bytes' sha256).
Both live in the ``models`` table, on SQLite and PostgreSQL alike, so every replica -- a
restarted pod, a new scheduler leader -- loads the promoted model without a shared volume.
``model.dir``, when set, is an export: the same two files are also written there
(``<id>.joblib`` and ``<id>.json``) for people and notebooks.

Loading checks the sidecar before unpickling anything: a model built by other library
versions or other feature code, or bytes that do not match the sidecar's sha256, are refused
(:class:`ModelError`) rather than silently mis-scored. Rows registered before artifacts were
stored (schema 0001) carry only a path; those are still loaded from that file.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import pandas as pd
import sklearn
from sqlalchemy import insert, select, update

from . import __version__
from .errors import ModelError
from .features import FEATURES
from .store import Store
from .store import tables as t
from .training import Metrics

if TYPE_CHECKING:
    from .model import Fitted

__all__ = [
    "LoadedModel",
    "SavedModel",
    "code_version",
    "current_model",
    "export_model",
    "library_versions",
    "load_artifact",
    "load_model",
    "register",
    "save_model",
    "stored_model",
]

_FEATURE_CODE = ("features.py", "history.py", "units.py", "tagkind.py", "model.py",
                 "thresholds.py")


def code_version() -> str:
    """The package version and a hash of the code that computes features and fits."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _FEATURE_CODE:
        digest.update((here / name).read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "scikit-learn": sklearn.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "joblib": joblib.__version__}


@dataclass
class LoadedModel:
    id: str
    fitted: Fitted
    sidecar: dict[str, Any] = field(default_factory=dict)


@dataclass
class SavedModel:
    """A serialised model, not yet anywhere: the artifact's bytes and its sidecar."""

    id: str
    artifact: bytes
    sidecar: dict[str, Any]


def save_model(fitted: Fitted, *, now: datetime, horizon_days: float,
               extra: dict[str, Any] | None = None) -> SavedModel:
    """Serialise ``fitted``: joblib bytes and the sidecar that vouches for them."""
    from .thresholds import error_bound

    model_id = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    buffer = io.BytesIO()
    joblib.dump({"estimator": fitted.estimator, "threshold": fitted.threshold,
                 "features": list(FEATURES)}, buffer)
    artifact = buffer.getvalue()
    steady = fitted.steady
    sidecar = {
        "id": model_id,
        "trained_as_of": now.isoformat(),
        "horizon_days": horizon_days,
        "windows": fitted.windows,
        "rows": fitted.rows,
        "calibrated": fitted.calibrated,
        "features": list(FEATURES),
        "threshold": fitted.threshold,
        "metrics": {"validation": fitted.validation.as_dict(),
                    **({"validation_steady": {
                        **steady.as_dict(),
                        "error_bound_95": error_bound(steady.suggested, steady.false_positives)}}
                       if steady is not None else {})},
        "thresholds": fitted.thresholds,
        "versions": library_versions(),
        "code_version": code_version(),
        "sha256": hashlib.sha256(artifact).hexdigest(),
        **(extra or {}),
    }
    return SavedModel(model_id, artifact, sidecar)


def export_model(saved: SavedModel, directory: Path) -> Path:
    """Write ``<id>.joblib`` and ``<id>.json`` under ``directory``; returns the artifact's path."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{saved.id}.joblib"
        path.write_bytes(saved.artifact)
        path.with_suffix(".json").write_text(
            json.dumps(saved.sidecar, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise ModelError(f"cannot export model {saved.id} to {directory}: {exc}",
                         path=str(directory)) from exc
    return path


def load_artifact(artifact: bytes, sidecar: dict[str, Any], *, source: str) -> LoadedModel:
    """Check ``sidecar`` against this code and ``artifact``, then unpickle; ``source`` names
    where they came from in errors. Nothing is unpickled when a check fails."""
    from .model import Fitted

    problems = []
    want = library_versions()
    versions = sidecar.get("versions") or {}
    for lib in ("scikit-learn", "numpy", "joblib"):
        if versions.get(lib) != want[lib]:
            problems.append(f"{lib} {versions.get(lib)} != {want[lib]}")
    if sidecar.get("code_version") != code_version():
        problems.append(f"code {sidecar.get('code_version')} != {code_version()}")
    if sidecar.get("features") != list(FEATURES):
        problems.append("feature list differs")
    if hashlib.sha256(artifact).hexdigest() != sidecar.get("sha256"):
        problems.append("artifact does not match its sidecar's sha256")
    if problems:
        raise ModelError(f"model {sidecar.get('id', '?')} refused: " + "; ".join(problems),
                         source=source, problems=problems)
    try:
        blob = joblib.load(io.BytesIO(artifact))
        val = sidecar["metrics"]["validation"]
        steady = sidecar["metrics"].get("validation_steady")
        fields = Metrics.__dataclass_fields__
        fitted = Fitted(blob["estimator"], float(blob["threshold"]), Metrics(**val),
                        sidecar.get("windows", {}), sidecar.get("rows", {}),
                        bool(sidecar.get("calibrated", True)),
                        Metrics(**{k: v for k, v in steady.items() if k in fields})
                        if steady else None, dict(sidecar.get("thresholds", {})))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model {sidecar.get('id', '?')} unreadable: {exc!r}",
                         source=source) from exc
    return LoadedModel(str(sidecar["id"]), fitted, sidecar)


def load_model(path: Path) -> LoadedModel:
    """Load an exported (or pre-0002) artifact file after checking the sidecar beside it."""
    side_path = path.with_suffix(".json")
    try:
        sidecar = json.loads(side_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"model sidecar missing: {side_path}", path=str(side_path)) from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"model sidecar unreadable: {exc}", path=str(side_path)) from exc
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model artifact missing: {path}", path=str(path)) from None
    return load_artifact(raw, sidecar, source=str(path))


def register(store: Store, saved: SavedModel, *, now: datetime, trained_at: datetime,
             promote: bool, note: str, path: Path | None = None) -> None:
    """Record a model with its artifact; when ``promote``, it becomes current and the
    previous one retires. ``path``: where it was also exported, if anywhere."""
    sidecar = saved.sidecar
    with store.begin() as conn:
        if promote:
            conn.execute(update(t.models).where(t.models.c.status == "promoted")
                         .values(status="retired"))
        conn.execute(insert(t.models).values(
            id=saved.id, created_at=now, trained_at=trained_at,
            horizon_days=float(sidecar["horizon_days"]),
            path=str(path) if path is not None else None,
            sha256=sidecar["sha256"], threshold=float(sidecar["threshold"]),
            metrics=sidecar["metrics"], status="promoted" if promote else "candidate",
            promoted_at=now if promote else None, note=note,
            artifact=saved.artifact, sidecar=sidecar))


def _load_row(row: Any) -> LoadedModel:
    if row.artifact is not None and row.sidecar is not None:
        if row.sha256 != row.sidecar.get("sha256"):
            raise ModelError(f"model {row.id} refused: the registry's sha256 differs from its "
                             "sidecar's", source=f"models/{row.id}")
        return load_artifact(bytes(row.artifact), dict(row.sidecar), source=f"models/{row.id}")
    if row.path:  # registered before the store kept artifacts
        return load_model(Path(row.path))
    raise ModelError(f"model {row.id} has no stored artifact", source=f"models/{row.id}")


_COLUMNS = (t.models.c.id, t.models.c.path, t.models.c.sha256, t.models.c.artifact,
            t.models.c.sidecar)


def current_model(store: Store) -> LoadedModel | None:
    """The promoted model, or ``None`` when there is none (rules-only mode).

    Raises :class:`ModelError` when the promoted artifact cannot be used."""
    with store.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(t.models.c.status == "promoted")
                           .order_by(t.models.c.promoted_at.desc()).limit(1)).first()
    return None if row is None else _load_row(row)


def stored_model(store: Store, model_id: str) -> LoadedModel:
    """Any registered model by id (promoted, candidate or retired)."""
    with store.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(t.models.c.id == model_id)).first()
    if row is None:
        raise ModelError(f"no model {model_id!r} in the registry", model_id=model_id)
    return _load_row(row)
