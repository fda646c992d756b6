"""The model: one scikit-learn Pipeline, calibrated on later data, thresholded for precision.

``P(dead)`` -- the probability that a unit is not used within the horizon -- comes from a
``Pipeline`` (feature selection, gradient-boosted trees) fitted on the oldest snapshots, then
calibrated with ``CalibratedClassifierCV(FrozenEstimator(pipeline))`` on the next ones, which
the pipeline never saw. The operating threshold is the lowest score at which the newest
snapshots the trees never saw (calibration, but its first, and validation) reach
``model.target_precision`` on two populations at once:

- every unit no guardrail keeps at those cut-offs (the first run on a registry, with its
  backlog of long-dead units), and
- the *steady-state subset*: what a run at one of those cut-offs would still judge if the
  registry had been cleaned at the previous weekly cut-off with the same threshold ``c``: the
  eligible units that were not eligible then (new, or kept by a guardrail: mostly CI builds
  just past the minimum age), plus those eligible then but scored below ``c`` (kept by the
  model, judged again). Only the previous cut-off is looked at (``training.previous_rows``,
  from the snapshot rows themselves). Once a registry is clean, these are all a run sees; they
  come back far more often than the long-dead backlog that dominates whole snapshots, so a
  threshold chosen on whole snapshots alone is too low for them. The subset depends on ``c``
  and its precision is not monotone in it: :func:`choose_steady_threshold` tries every score.

The subset is pooled over those snapshots: 0.999 is a point estimate resting on a handful of
used units, and below 1,000 units it means "no used unit above the threshold". A one-sided
bound at the 0.95 level would be stricter, but even with no error it reaches 0.999 only from 2,995
suggestions (:func:`error_bound`), so requiring it would suggest nothing on such fleets; it is
recorded in the sidecar beside both precisions; the point estimate must hold on the pooled
subset AND on the whole snapshots at the same threshold.

Every saved model is a joblib artifact with a JSON sidecar (training window, features, metrics,
library and code versions), both kept in its row of the ``models`` table (:mod:`.artifacts`;
``model.dir`` is an optional export). A model built by other library or feature code is refused
(:class:`ModelError`) rather than silently mis-scored. A new model is promoted only when it is
not worse than the current one on the same validation snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from .artifacts import (
    LoadedModel,
    code_version,
    current_model,
    export_model,
    load_model,
    register,
    save_model,
    stored_model,
)
from .config import Config
from .errors import ModelError
from .evaluation import Efficiency, Weekly, threshold_efficiency, weekly_runs
from .features import FEATURES
from .store import Store
from .thresholds import choose_steady_threshold, choose_threshold, error_bound
from .training import Metrics, Split, metrics, previous_rows

__all__ = [
    "Fitted",
    "LoadedModel",
    "choose_steady_threshold",
    "choose_threshold",
    "code_version",
    "current_model",
    "error_bound",
    "fit",
    "load_model",
    "make_pipeline",
    "register",
    "save_model",
    "stored_model",
    "thin_data_message",
]


def _threads() -> threadpool_limits:
    """One OpenMP thread for the trees: on a shared machine, spinning worker threads cost
    far more than they save (training was several times slower with all cores; bench/)."""
    return threadpool_limits(limits=1, user_api="openmp")


def make_pipeline(random_state: int = 0) -> Pipeline:
    """The model, untrained: feature columns in a fixed order, then boosted trees (which take
    missing values -- never used, never deployed -- as information, not as zero)."""
    return Pipeline([
        ("select", ColumnTransformer([("features", "passthrough", list(FEATURES))],
                                     remainder="drop", verbose_feature_names_out=False)),
        ("trees", HistGradientBoostingClassifier(
            max_iter=250, learning_rate=0.06, max_leaf_nodes=31, min_samples_leaf=40,
            l2_regularization=1.0, random_state=random_state)),
    ])


@dataclass
class Fitted:
    """A fitted, calibrated model with its operating threshold and validation metrics."""

    estimator: Any  # predict_proba(frame)[:, 1] = P(dead)
    threshold: float
    validation: Metrics
    windows: dict[str, str]
    rows: dict[str, int]
    calibrated: bool = True
    # The same threshold judged on the validation units a weekly-cleaned registry would see
    # (training.newly_eligible), and the threshold each population alone would allow.
    steady: Metrics | None = None
    thresholds: dict[str, float] = field(default_factory=dict)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        if frame.empty:
            return np.zeros(0)
        with _threads():
            return np.asarray(self.estimator.predict_proba(frame[list(FEATURES)])[:, 1])

    def suggest(self, frame: pd.DataFrame) -> np.ndarray:
        return (self.score(frame) >= self.threshold) & frame["eligible"].to_numpy(dtype=bool)




def fit(data: pd.DataFrame, split: Split, config: Config, *,
        extra: pd.DataFrame | None = None) -> Fitted:
    """Train on ``split.train`` (+ ``extra`` feedback rows), calibrate on ``split.calibrate``,
    pick the threshold on the eligible units of ``split.validate``."""
    from .training import window_text

    target = float(config["model.target_precision"])
    train = data[data["at"].isin(split.train)]
    if extra is not None and not extra.empty:
        train = pd.concat([train, extra[train.columns.intersection(extra.columns)]],
                          ignore_index=True)
    if train["dead"].nunique() < 2:
        raise ModelError("training data has a single label: every unit was "
                         + ("unused" if train["dead"].iloc[0] else "used"), rows=len(train))
    pipe = make_pipeline(int(config["model.random_state"]))
    with _threads():
        pipe.fit(train[list(FEATURES)], train["dead"].to_numpy(),
                 trees__sample_weight=train["weight"].to_numpy(dtype=float))
    cal = data[data["at"].isin(split.calibrate) & data["eligible"]]
    estimator: Any = pipe
    calibrated = False
    if len(cal) >= 20 and cal["dead"].value_counts().min() >= 2 and cal["dead"].nunique() == 2:
        # Sigmoid keeps the trees' ranking (isotonic plateaus would tie hundreds of units and
        # make a 0.999 threshold all-or-nothing). The frozen pipeline predicts the same on any
        # fold, so two plain folds only satisfy the splitter.
        estimator = CalibratedClassifierCV(FrozenEstimator(pipe), method="sigmoid",
                                           cv=KFold(2))
        with _threads():
            estimator.fit(cal[list(FEATURES)], cal["dead"].to_numpy())
        calibrated = True
    model = Fitted(estimator, 1.01, Metrics(0, 0, 1.0, 0.0, 0.0, 0.0, 0.0),
                   {"train": window_text(split.train), "calibrate": window_text(split.calibrate),
                    "validate": window_text(split.validate)},
                   {"train": len(train), "calibrate": len(cal)}, calibrated)
    # The threshold is chosen on every whole snapshot the trees never saw, calibration and
    # validation alike, but the first calibration one (its previous cut-off is a sampled
    # training snapshot, where the units' previous rows may be missing): the returns it hangs
    # on are rare, a handful in five weeks of a small fleet, and twice the weeks leave less to
    # luck. The sigmoid fitted on the calibration snapshots has two parameters; it cannot have
    # learnt which units came back.
    chosen = [*split.calibrate[1:], *split.validate]
    mask = data["at"].isin(chosen).to_numpy() & data["eligible"].to_numpy(bool)
    rows = data[mask]
    scores = model.score(rows)
    # Each unit's score at the previous cut-off when it was eligible there: a weekly run at
    # that cut-off would have deleted it when that score reached the threshold.
    prev = previous_rows(data, chosen)[mask]
    previous = np.full(len(rows), -np.inf)
    known = prev >= 0
    if known.any():
        need = np.unique(prev[known])
        previous[known] = model.score(data.iloc[need])[np.searchsorted(need, prev[known])]
    dead = rows["dead"].to_numpy()
    model.threshold, whole, on_steady = choose_steady_threshold(scores, dead, previous, target)
    model.thresholds = {"whole": whole, "steady": on_steady}
    model.rows["threshold"] = len(rows)
    # Reported on the validation snapshots alone, as before and as promotion compares.
    is_val = rows["at"].isin(split.validate).to_numpy()
    val, scores, previous = rows[is_val], scores[is_val], previous[is_val]
    model.rows["validate"] = len(val)
    model.validation = metrics(val, scores >= model.threshold)
    seen = previous < model.threshold
    model.rows["validate_steady"] = int(seen.sum())
    model.steady = metrics(val[seen], scores[seen] >= model.threshold)
    return model


@dataclass
class TrainReport:
    """What ``tagwarden train`` did: a new model and its comparison with the current one."""

    mode: str  # model | rules-only
    message: str
    snapshots: int = 0
    model_id: str | None = None
    promoted: bool = False
    threshold: float | None = None
    new: Metrics | None = None
    current_id: str | None = None
    current: Metrics | None = None
    new_steady: Metrics | None = None  # the new model on the steady-state subset

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "message": self.message, "snapshots": self.snapshots,
                "model_id": self.model_id, "promoted": self.promoted,
                "threshold": self.threshold,
                "new": self.new.as_dict() if self.new else None,
                "new_steady": self.new_steady.as_dict() if self.new_steady else None,
                "current_id": self.current_id,
                "current": self.current.as_dict() if self.current else None}


def _not_worse(new: Metrics, old: Metrics, target: float) -> bool:
    """Promotion test on the same validation rows: precision holds, bytes do not shrink."""
    if new.precision < min(target, old.precision):
        return False
    return new.bytes_recall >= old.bytes_recall - 0.005


def rules_only_message(history_days: float, horizon_days: float) -> str:
    return (f"rules-only mode: {history_days:.0f} days of history, a model needs more than "
            f"the {horizon_days:.0f}-day horizon plus three weekly snapshots")


def thin_data_message(data: pd.DataFrame, split: Split,
                      extra: pd.DataFrame | None = None) -> str | None:
    """Why these snapshots cannot train a model, in rules-only mode's words; None when they
    can. Enough days of history are not enough: a quiet registry has every unit unused after
    every cut-off, and trees need both labels."""
    at = data["at"] if "at" in data else pd.Series(dtype=float)
    labels = set(data.loc[at.isin(split.train), "dead"].astype(int)) if len(data) else set()
    if extra is not None and "dead" in extra:
        labels |= set(extra["dead"].astype(int))
    if len(labels) < 2:
        what = ("no manifest alive" if not labels else
                "every manifest unused" if labels == {1} else "every manifest used")
        return (f"rules-only mode: {len(split.train)} training snapshots with {what} after "
                f"them; a model needs both used and unused examples")
    if not (at.isin(split.validate) & data["eligible"].astype(bool)).any():
        return ("rules-only mode: no manifest outside the guardrails at the validation "
                "snapshots to choose a threshold on")
    return None


def _prepare(store: Store, config: Config, now: datetime, horizon_days: float,
             until: datetime) -> tuple[Any, list[float], pd.DataFrame]:
    from .features import days, load_history
    from .training import (
        build_dataset,
        feedback_rows,
        read_feedback,
        run_every,
        snapshot_times,
        split_by_time,
    )

    with store.connect() as conn:
        h = load_history(conn, until=until,
                         production=config["model.production_environments"])
        feedback = read_feedback(conn, until=now)
    every = run_every(config)
    times = snapshot_times(h, now=days(now), horizon=horizon_days, every=every)
    extra = feedback_rows(h, feedback, weight=float(config["model.feedback_weight"]),
                          until=days(now))
    data = pd.DataFrame()
    if len(times) >= 3:
        # The training snapshots are sampled as they are built (the calibration and validation
        # ones stay whole): memory bounded by the rows the trees take, not by a year of units.
        train_times = split_by_time(times).train
        data = build_dataset(h, config, times, horizon_days, sample=train_times,
                             rows_per_snapshot=int(config["model.max_train_rows"])
                             // len(train_times),
                             seed=int(config["model.random_state"]))
    return h, times, _pack(data, extra)


def _pack(data: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    data = data.copy()
    data.attrs["feedback"] = extra
    return data


def train(store: Store, config: Config, *, now: datetime, horizon_days: float | None = None,
          directory: Path | None = None) -> TrainReport:
    """Train on everything known at ``now``; store, register, promote when not worse.

    ``directory`` (default ``model.dir``, when set) also receives the artifact as files."""
    from .features import days
    from .training import split_by_time

    horizon = horizon_days or config["model.horizon"].total_seconds() / 86400
    h, times, data = _prepare(store, config, now, horizon, now)
    start = h.start
    history = days(now) - start if start is not None else 0.0
    if len(times) < 3:
        return TrainReport("rules-only", rules_only_message(history, horizon), len(times))
    split = split_by_time(times)
    thin = thin_data_message(data, split, data.attrs.get("feedback"))
    if thin:
        return TrainReport("rules-only", thin, len(times))
    fitted = fit(data, split, config, extra=data.attrs.get("feedback"))
    val = data[data["at"].isin(split.validate) & data["eligible"]]
    target = float(config["model.target_precision"])
    current_id, current_metrics, promote = None, None, True
    try:
        current = current_model(store)
    except ModelError as exc:
        current, note = None, f"current model unusable ({exc.message}); promoted"
    else:
        note = "first model; promoted"
    if current is not None:
        current_id = current.id
        current_metrics = metrics(val, current.fitted.suggest(val))
        promote = _not_worse(fitted.validation, current_metrics, target)
        note = "not worse than the current model; promoted" if promote else \
            "worse than the current model on the same validation; kept as a candidate"
    saved = save_model(fitted, now=now, horizon_days=horizon,
                       extra={"baseline_snapshots": len(times)})
    export = directory or (Path(config["model.dir"]) if config["model.dir"] else None)
    path = export_model(saved, export) if export is not None else None
    register(store, saved, now=now, trained_at=now, promote=promote, note=note, path=path)
    return TrainReport("model", note, len(times), saved.id, promote, fitted.threshold,
                       fitted.validation, current_id, current_metrics, fitted.steady)


@dataclass
class BacktestReport:
    at: datetime
    horizon_days: float
    mode: str
    message: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    threshold: float | None = None
    training: dict[str, str] = field(default_factory=dict)
    # The model's threshold against the best chosen in hindsight (evaluation.Efficiency).
    efficiency: Efficiency | None = None
    # Weekly runs from ``at`` to the window's end, per method (evaluation.weekly_runs).
    weekly: dict[str, Weekly] = field(default_factory=dict)

    def row(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["name"] == name), None)

    def ratio(self, name: str = "idle rule") -> float | None:
        """Unused bytes the model reclaims over those the named baseline reclaims."""
        model, other = self.row("model"), self.row(name)
        if model is None or other is None:
            return None
        theirs = _dead_bytes(other)
        return _dead_bytes(model) / theirs if theirs else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "horizon_days": self.horizon_days, "mode": self.mode,
                "message": self.message, "threshold": self.threshold,
                "training": self.training, "results": self.rows,
                "ratio_inside_guardrails": self.ratio(),
                "threshold_efficiency": self.efficiency.as_dict() if self.efficiency else None,
                "weekly": {name: w.as_dict() for name, w in self.weekly.items()}}


def _dead_bytes(row: dict[str, Any]) -> float:
    """Bytes of truly unused manifests a method suggested (what it really reclaims)."""
    return float(row["bytes_recall"]) * float(row["dead_bytes"])


def backtest(store: Store, config: Config, *, at: datetime, now: datetime,
             horizon_days: float | None = None, weekly: bool = True) -> BacktestReport:
    """Train on what was known at ``at``; evaluate on what happened in ``(at, at + H]``.

    Beside each method's figures at ``at``: the model's threshold efficiency there, and with
    ``weekly`` the model and the idle rule inside the guardrails run every week until
    ``at + H`` (:mod:`.evaluation`)."""
    from datetime import timedelta

    from .features import days
    from .training import (
        RuleBaseline,
        label_snapshot,
        run_every,
        split_by_time,
        tune_idle_rule,
        tune_keep_rule,
    )

    horizon = horizon_days or config["model.horizon"].total_seconds() / 86400
    end = at + timedelta(days=horizon)
    if end > now:
        raise ModelError(f"the horizon after {at:%Y-%m-%d} has not elapsed yet "
                         f"(ends {end:%Y-%m-%d})", at=at.isoformat())
    h, times, data = _prepare(store, config, at, horizon, end)
    # Training sees only cut-offs whose horizon ended by ``at``: _prepare used now=at.
    test = label_snapshot(h, config, days(at), horizon)
    target = float(config["model.target_precision"])
    report = BacktestReport(at, horizon, "model", "")
    split = split_by_time(times) if len(times) >= 3 else None
    thin = (rules_only_message(days(at) - (h.start or days(at)), horizon) if split is None
            else thin_data_message(data, split, data.attrs.get("feedback")))
    fitted = None
    if thin or split is None:
        report.mode = "rules-only"
        report.message = str(thin)
    else:
        fitted = fit(data, split, config, extra=data.attrs.get("feedback"))
        report.threshold = fitted.threshold
        report.training = fitted.windows
        m = metrics(test, fitted.suggest(test))
        report.rows.append({"name": "model", "rule": f"P(dead) >= {fitted.threshold:.4f}",
                            **m.as_dict()})
        eligible = test[test["eligible"].to_numpy(dtype=bool)]
        sizes = eligible["bytes"].to_numpy(dtype=float)
        if "size_known" in eligible:
            sizes = np.where(eligible["size_known"].to_numpy(dtype=bool), sizes, 0.0)
        report.efficiency = threshold_efficiency(
            fitted.score(eligible), eligible["dead"].to_numpy(), sizes, fitted.threshold,
            target)
    # Baselines tuned on the same past snapshots the model trained on: inside the guardrails
    # (the strict comparison), and the idle rule on its own, as registries offer it. The idle
    # rules are held to the model's own standard: the target on whole snapshots and on what a
    # weekly run judges again (decision 1 of #14); "idle (whole)" is tuned on whole snapshots
    # alone, as before that decision, to show what the weekly standard costs a rule.
    past = data if len(data) else test.iloc[:0]
    every = run_every(config)
    rules: dict[str, RuleBaseline] = {}
    if not past.empty:
        inside = past[past["eligible"].to_numpy(dtype=bool)]
        rules = {"idle rule": tune_idle_rule(inside, target, every=every),
                 "idle (whole)": tune_idle_rule(inside, target),
                 "keep rule": tune_keep_rule(inside, target),
                 "idle alone": tune_idle_rule(past, target, "all", every=every)}
        for name, rule in rules.items():
            m = metrics(test, rule.suggest(test), scope=rule.scope)
            report.rows.append({"name": name, "rule": rule.describe(), **m.as_dict()})
    if weekly and fitted is not None and rules:
        report.weekly = weekly_runs(
            h, config, {"model": fitted.suggest, "idle rule": rules["idle rule"].suggest,
                        "idle (whole)": rules["idle (whole)"].suggest},
            start=days(at), end=days(end))
    if report.mode == "model" and len(report.rows) > 1:
        model_dead = _dead_bytes(report.rows[0])
        ratios = [f"{model_dead / _dead_bytes(r):.2f}x the {r['name']}"
                  for r in report.rows[1:] if _dead_bytes(r) > 0]
        report.message = "model reclaims " + ", ".join(ratios) + " (bytes of unused manifests)"
    return report
