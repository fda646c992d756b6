"""Training data from history: weekly cut-offs, labels from what happened next, baselines.

A *snapshot* at cut-off ``t`` holds the features of every alive unit as of ``t`` and its label:
``dead`` = 1 when nothing used it in ``(t, t + H]`` (no use-class pull of the digest or of a
tag then pointing at it, no deploy, no pod running it). Only cut-offs whose horizon has fully
elapsed by ``now`` are used, and they are split by time: the earliest train the model, the next
calibrate it, the latest choose the operating threshold.

People's decisions are labels too (:func:`read_feedback`): a denied suggestion says "still
used" and weighs ``model.feedback_weight``; an approved-and-executed one says "dead".

The rule baselines are tuned on the past only (the snapshots a model would train on) and then
evaluated on the same instant as the model: "idle more than D days and not running" and
"keep the last N pushed per repository".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from sqlalchemy import Connection, inspect, select

from .config import Config
from .features import FEATURES, History, days, features_at, to_datetime, used_in_window
from .history import rows
from .policy import evaluate_history

__all__ = [
    "Feedback",
    "Metrics",
    "RuleBaseline",
    "DATASET_COLUMNS",
    "build_dataset",
    "eligible_at",
    "eligible_keys",
    "feedback_rows",
    "metrics",
    "newly_eligible",
    "previous_rows",
    "read_feedback",
    "run_every",
    "sample_unused",
    "snapshot_times",
    "split_by_time",
    "steady_rows",
    "tune_idle_rule",
    "tune_keep_rule",
]

MIN_HISTORY_DAYS = 14  # features need some past before the first cut-off


def snapshot_times(h: History, *, now: float, horizon: float, every: float) -> list[float]:
    """Cut-offs at UTC midnights, ``every`` days apart, ending at the newest one whose horizon
    has fully elapsed by ``now``; none when the history is shorter than that."""
    start = h.start
    if start is None:
        return []
    first = math.ceil(start + MIN_HISTORY_DAYS)
    last = math.floor(now - horizon)
    out: list[float] = []
    t = float(last)
    while t >= first:
        out.append(t)
        t -= every
    return sorted(out)


def run_every(config: Config) -> float:
    """Days between two runs of the suggestions, as training assumes them: the spacing of its
    snapshots (``model.snapshot_every``)."""
    return config["model.snapshot_every"].total_seconds() / 86400


def label_snapshot(h: History, config: Config, t: float, horizon: float) -> pd.DataFrame:
    """Features at ``t``, guardrail verdicts at ``t`` and the label from ``(t, t + H]``."""
    frame = features_at(h, t)
    blocked = evaluate_history(h, config, t)
    used = used_in_window(h, t, t + horizon)
    keys = list(rows(frame, "repository", "digest"))
    frame["blocked_by"] = [blocked.get(k, []) for k in keys]
    frame["eligible"] = [not blocked.get(k) for k in keys]
    frame["dead"] = [0 if k in used else 1 for k in keys]
    frame["at"] = t
    frame["weight"] = 1.0
    return frame


# What a dataset row keeps of its snapshot: the features and what the labels, weights, split,
# metrics and rule baselines read. The tag lists and guardrail reasons are Python objects per
# row, most of a year's dataset in memory, and no training step reads them.
DATASET_COLUMNS: tuple[str, ...] = (
    "repository", "digest", "bytes", "size_known", "eligible", "settled", "dead", "at",
    "weight", *FEATURES)


_FLOAT32 = dict.fromkeys(FEATURES, np.float32)


def build_dataset(h: History, config: Config, times: Iterable[float], horizon: float, *,
                  sample: Iterable[float] = (), rows_per_snapshot: int = 0,
                  seed: int = 0,
                  columns: Iterable[str] | None = DATASET_COLUMNS) -> pd.DataFrame:
    """The labelled snapshots at ``times``, one row per alive unit and cut-off, each with
    ``settled``: the unit was eligible one run earlier too.

    The snapshots in ``sample`` (the training ones) keep every used unit and at most about
    ``rows_per_snapshot`` rows in all, the unused ones drawn at random and re-weighted
    (:func:`sample_unused`): built one snapshot at a time, the dataset never holds a year of
    every alive unit at every cut-off. ``columns`` are those kept (None: every column of the
    snapshot, tags and reasons included, for reviewing a small fleet by hand)."""
    sampled = set(sample)
    keep = list(columns) if columns is not None else None
    frames = []
    every = run_every(config)
    before: set[tuple[str, str]] = set()
    last = -np.inf
    for t in times:
        frame = label_snapshot(h, config, t, horizon)
        # Whether each unit was eligible at the previous run too (what the idle rule's weekly
        # standard asks, :func:`steady_rows`): the previous snapshot's answer when it is one
        # run earlier, else looked up.
        if abs(t - every - last) > 1e-9:
            before = eligible_at(h, config, t - every)
        keys = zip(frame["repository"], frame["digest"], strict=True)
        frame["settled"] = np.fromiter((k in before for k in keys), dtype=bool,
                                       count=len(frame))
        before, last = eligible_keys(frame), t
        # Single precision halves a year's dataset; the trees bin each feature into at most
        # 255 bins, far coarser than float32's ~7 digits (a day to within seconds).
        frame = (frame if keep is None else frame[keep]).astype(_FLOAT32)
        if t in sampled and rows_per_snapshot > 0:
            frame = sample_unused(frame, rows_per_snapshot,
                                  np.random.default_rng([seed, int(t)]))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sample_unused(frame: pd.DataFrame, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """Every used row (``dead`` 0, the rare class the threshold hinges on) and a uniform draw of
    the unused ones, at least half of ``rows``, each kept one weighing what it stands for: the
    weights of the unused rows sum to what they summed to before the draw."""
    dead = frame["dead"].to_numpy() == 1
    n_dead = int(dead.sum())
    room = max(rows - int((~dead).sum()), rows // 2)
    if n_dead <= room:
        return frame
    where = np.flatnonzero(dead)
    kept = np.sort(rng.choice(where, size=room, replace=False))
    keep = ~dead
    keep[kept] = True
    out = frame[keep].copy()
    unused = out["dead"].to_numpy() == 1
    total = float(frame["weight"].to_numpy(dtype=float)[dead].sum())
    w = out["weight"].to_numpy(dtype=float).copy()
    w[unused] *= total / w[unused].sum()
    out["weight"] = w
    return out


@dataclass(frozen=True)
class Split:
    train: list[float]
    calibrate: list[float]
    validate: list[float]


def split_by_time(times: list[float]) -> Split:
    """Oldest three fifths train, the next fifth calibrates, the newest fifth validates (each
    at least one)."""
    n = len(times)
    if n < 3:
        raise ValueError("need at least three snapshots to train, calibrate and validate")
    n_val = max(1, round(n * 0.2))
    n_cal = max(1, round(n * 0.2))
    n_train = n - n_val - n_cal
    return Split(times[:n_train], times[n_train:n_train + n_cal], times[n_train + n_cal:])


def previous_rows(data: pd.DataFrame, times: Iterable[float]) -> np.ndarray:
    """For each row of the snapshots ``times``: the position in ``data`` of the same unit
    (repository, digest) at the previous cut-off of ``data`` (the newest ``at`` before its
    own) when no guardrail kept it there, else -1 (also for rows of other snapshots, and at
    the oldest cut-off, which has no previous one)."""
    wanted = set(times)
    out = np.full(len(data), -1, dtype=np.int64)
    if data.empty or not wanted:
        return out
    at = data["at"].to_numpy(dtype=float)
    eligible = data["eligible"].to_numpy(dtype=bool)
    key = (data["repository"].astype(str) + "@" + data["digest"].astype(str)).to_numpy()
    cuts = sorted(set(at.tolist()))
    for prev, t in zip(cuts, cuts[1:], strict=False):
        if t not in wanted:
            continue
        before = np.flatnonzero((at == prev) & eligible)
        where = dict(zip(key[before].tolist(), before.tolist(), strict=True))
        rows = np.flatnonzero(at == t)
        out[rows] = [where.get(k, -1) for k in key[rows].tolist()]
    return out


def eligible_at(h: History, config: Config, t: float) -> set[tuple[str, str]]:
    """The units no guardrail keeps at ``t`` (the recorded history's guardrails, as training
    evaluates them): those a run at ``t`` could have judged."""
    return {key for key, why in evaluate_history(h, config, t).items() if not why}


def eligible_keys(frame: pd.DataFrame) -> set[tuple[str, str]]:
    """The units of a labelled snapshot that no guardrail keeps."""
    ok = frame["eligible"].to_numpy(dtype=bool)
    return set(zip(frame["repository"].to_numpy()[ok], frame["digest"].to_numpy()[ok],
                   strict=True))


def newly_eligible(data: pd.DataFrame, times: Iterable[float]) -> np.ndarray:
    """Rows of the snapshots ``times`` that no guardrail keeps and whose unit was not eligible
    at the previous cut-off: it did not exist then, or a guardrail kept it (younger than the
    minimum age, among the last N versions, running, deployed lately, protected). Rows at the
    oldest cut-off of ``data`` have no previous one and are never newly eligible."""
    if data.empty:
        return np.zeros(0, dtype=bool)
    at = data["at"].to_numpy(dtype=float)
    return (np.isin(at, [t for t in times if t > at.min()])
            & data["eligible"].to_numpy(dtype=bool) & (previous_rows(data, times) < 0))


# --- feedback ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feedback:
    """A person's verdict on one suggested manifest: ``denied`` (still used) or ``executed``."""

    repository: str
    digest: str
    at: datetime  # when the suggestion was made
    verdict: str


def read_feedback(conn: Connection, *, until: datetime) -> list[Feedback]:
    """Denied and executed suggestions decided by ``until``, from the executor's tables.

    Filtered on when the verdict was known (``finished_at``: the denial or the deletion), not
    on when the suggestion was made: a backtest at ``T`` must not learn from a denial given
    after ``T``."""
    if "batch_items" not in inspect(conn).get_table_names():
        return []
    from .decisions import ItemState
    from .store import tables as t

    bi = t.batch_items
    rows = conn.execute(select(bi.c.repository, bi.c.digest, bi.c.suggested_at, bi.c.state)
                        .where(bi.c.state.in_((ItemState.DENIED, ItemState.DELETED)),
                               bi.c.finished_at <= until)).all()
    return [Feedback(r.repository, r.digest, r.suggested_at,
                     "denied" if r.state == ItemState.DENIED else "executed") for r in rows]


def feedback_rows(h: History, feedback: list[Feedback], *, weight: float,
                  until: float) -> pd.DataFrame:
    """Training rows for people's verdicts: features as of the suggestion, their label."""
    by_day: dict[float, list[Feedback]] = {}
    for fb in feedback:
        when = days(fb.at)
        if when <= until:
            by_day.setdefault(float(math.floor(when)), []).append(fb)
    frames = []
    for day, items in sorted(by_day.items()):
        frame = features_at(h, day)
        verdict = {(fb.repository, fb.digest): fb.verdict for fb in items}
        keys = list(rows(frame, "repository", "digest"))
        mask = np.array([k in verdict for k in keys], dtype=bool)
        frame = frame[mask].copy()
        if frame.empty:
            continue
        frame["dead"] = [0 if verdict[k] == "denied" else 1
                         for k in rows(frame, "repository", "digest")]
        frame["weight"] = np.where(frame["dead"] == 0, weight, 1.0)
        frame["eligible"] = True
        frame["blocked_by"] = [[] for _ in range(len(frame))]
        frame["at"] = day
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --- metrics and baselines --------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """Quality of a set of suggestions against what happened next (eligible units only)."""

    suggested: int
    false_positives: int
    precision: float
    recall: float
    bytes_recall: float
    suggested_bytes: float
    dead_bytes: float
    # Bytes figures count only manifests whose size the store knows (a scan read it); these
    # say how many unused ones were left out of them, and how many were counted.
    dead_sized: int = 0
    dead_unsized: int = 0

    @property
    def bytes_known(self) -> bool:
        """Whether bytes recall means anything: some unused manifest has a known size (or
        there was no unused manifest at all)."""
        return self.dead_sized > 0 or self.dead_unsized == 0

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def metrics(frame: pd.DataFrame, suggested: np.ndarray, *, scope: str = "eligible") -> Metrics:
    """Precision, recall and bytes recall of ``suggested`` among the eligible rows (what no
    guardrail keeps), or among all rows with ``scope="all"`` (a rule used on its own). Bytes
    are counted over the rows of known size only (``size_known``; all rows when absent)."""
    eligible = (frame["eligible"].to_numpy(dtype=bool) if scope == "eligible"
                else np.ones(len(frame), dtype=bool))
    dead = frame["dead"].to_numpy(dtype=bool) & eligible
    pick = suggested.astype(bool) & eligible
    known = (frame["size_known"].to_numpy(dtype=bool) if "size_known" in frame
             else np.ones(len(frame), dtype=bool))
    # A sampled training snapshot's row stands for ``weight`` rows (build_dataset): counted
    # so, the rule baselines are tuned on the same past they would see unsampled.
    w = (frame["weight"].to_numpy(dtype=float) if "weight" in frame
         else np.ones(len(frame)))
    size = frame["bytes"].to_numpy(dtype=float) * w
    n = float(w[pick].sum())
    fp = float(w[pick & ~dead].sum())
    dead_bytes = float(size[dead & known].sum())
    got = float(size[pick & dead & known].sum())
    return Metrics(
        suggested=round(n),
        false_positives=round(fp),
        precision=(n - fp) / n if n else 1.0,
        recall=float(w[pick & dead].sum()) / float(w[dead].sum()) if dead.any() else 0.0,
        bytes_recall=got / dead_bytes if dead_bytes else 0.0,
        suggested_bytes=float(size[pick & known].sum()),
        dead_bytes=dead_bytes,
        dead_sized=round(float(w[dead & known].sum())),
        dead_unsized=round(float(w[dead & ~known].sum())),
    )


@dataclass(frozen=True)
class RuleBaseline:
    name: str
    parameter: float  # D days idle, or N kept
    scope: str = "eligible"  # eligible: inside the guardrails; all: the rule on its own

    def suggest(self, frame: pd.DataFrame) -> np.ndarray:
        if self.name == "idle":
            return ((frame["idle_days"].to_numpy(dtype=float) > self.parameter)
                    & (frame["running"].to_numpy(dtype=float) == 0))
        return frame["newer_pushes"].to_numpy(dtype=float) >= self.parameter

    def describe(self) -> str:
        alone = " (on its own)" if self.scope == "all" else ""
        if self.name == "idle":
            return f"idle more than {int(self.parameter)} days and not running{alone}"
        return f"keep the last {int(self.parameter)} pushed per repository{alone}"


_IDLE_GRID = (7, 14, 21, 30, 45, 60, 90, 120, 150, 180, 240, 300, 365, 500, 730)
_KEEP_GRID = (1, 2, 3, 5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)


def _tune(name: str, grid: Iterable[int], past: pd.DataFrame, target: float,
          scope: str = "eligible", every: float | None = None) -> RuleBaseline:
    """The most permissive setting that reaches ``target`` precision on past snapshots (and,
    with ``every``, on what a registry cleaned every ``every`` days would judge again:
    :func:`steady_rows`)."""
    best = RuleBaseline(name, float(max(grid)), scope)
    best_bytes = -1.0
    for value in grid:
        rule = RuleBaseline(name, float(value), scope)
        picked = rule.suggest(past)
        m = metrics(past, picked, scope=scope)
        if not (m.suggested and m.precision >= target and m.suggested_bytes > best_bytes):
            continue
        if every is not None:
            again = steady_rows(past, rule, every)
            if metrics(past[again], picked[again], scope=scope).precision < target:
                continue
        best, best_bytes = rule, m.suggested_bytes
    return best


def steady_rows(past: pd.DataFrame, rule: RuleBaseline, every: float) -> np.ndarray:
    """Rows an idle rule judges again when the registry was cleaned with it one run earlier
    (``every`` days): the units it did not take then. For a unit it takes now (idle more than
    D days, so unused since the previous run when D >= ``every``) that is one idle at most D
    days then, or -- inside the guardrails -- one a guardrail still kept then (``settled``
    false): CI builds just past the minimum age, releases just superseded. Only suggested
    rows count for precision, so the others' membership does not matter."""
    idle = past["idle_days"].to_numpy(dtype=float)
    again = idle - every <= rule.parameter
    if rule.scope == "eligible" and "settled" in past:
        again |= ~past["settled"].to_numpy(dtype=bool)
    return again


def tune_idle_rule(past: pd.DataFrame, target: float, scope: str = "eligible", *,
                   every: float | None = None) -> RuleBaseline:
    """The idle rule tuned on ``past``; with ``every``, to the same precision in weekly
    operation as on whole snapshots, as the model's threshold is (#14, decision 1)."""
    return _tune("idle", _IDLE_GRID, past, target, scope, every)


def tune_keep_rule(past: pd.DataFrame, target: float) -> RuleBaseline:
    return _tune("keep", _KEEP_GRID, past, target)


def window_text(times: list[float]) -> str:
    if not times:
        return "none"
    return f"{to_datetime(times[0]):%Y-%m-%d}..{to_datetime(times[-1]):%Y-%m-%d}"
