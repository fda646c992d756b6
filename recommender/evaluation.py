"""What a backtest reports beyond its first run: threshold efficiency and weekly runs.

*Threshold efficiency* asks what the operating threshold gives away. At the backtest instant,
on the units no guardrail keeps, it divides the unused bytes the model suggests at its
threshold by the most unused bytes the same scores reach at precision >= the target when the
threshold is chosen knowing the future (every threshold tried on the instant's own labels).
Bytes are those of unused manifests (what a deletion really reclaims, as bytes recall counts
them), of known size. The operating threshold is one of the thresholds tried, so the value
exceeds 1 only when the model's own precision there misses the target.

*Weekly runs* are the steady state of decision 1 in #14: a registry cleaned every week from the
backtest instant, each method deleting what it suggests, so that later runs judge only what is
new or was kept last time. A suggestion is counted false when the unit is used again after its
run and before the end of the backtest window (instant + horizon), not within a full horizon
after each run: a run k weeks later has a window 7k days shorter, so later runs can only look
better than a full horizon would show them (the first run's window is the full horizon).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .config import Config
from .features import History, to_datetime
from .training import label_snapshot

__all__ = ["Efficiency", "Weekly", "WeeklyRun", "threshold_efficiency", "weekly_runs"]


@dataclass(frozen=True)
class Efficiency:
    """Unused bytes at the operating threshold over the most reachable at the target."""

    value: float | None  # None: nothing is reachable at the target (``reason`` says why)
    operating_bytes: float
    best_bytes: float
    best_threshold: float | None  # the hindsight threshold reaching ``best_bytes``
    target: float
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def threshold_efficiency(scores: np.ndarray, dead: np.ndarray, sizes: np.ndarray,
                         threshold: float, target: float) -> Efficiency:
    """``scores``, ``dead`` labels and ``sizes`` (bytes, 0 when unknown) of the eligible units.

    A hindsight threshold cannot split units with the same score (ties move together, as in
    :func:`.thresholds.choose_threshold`); precision is counted in units, as everywhere else.
    The value is None when there is nothing to reach: no unit, no unused bytes, or no
    threshold at which any unused bytes come at the target precision.
    """
    scores = np.asarray(scores, dtype=float)
    dead = np.asarray(dead).astype(bool)
    sizes = np.asarray(sizes, dtype=float)
    got = float(sizes[(scores >= threshold) & dead].sum())
    if len(scores) == 0:
        return Efficiency(None, got, 0.0, None, target, "no eligible unit")
    if not sizes[dead].sum() > 0:
        return Efficiency(None, got, 0.0, None, target, "no unused bytes")
    order = np.argsort(-scores, kind="stable")
    s, d = scores[order], dead[order]
    n = np.arange(1, len(s) + 1)
    precision = np.cumsum(d) / n
    reached = np.cumsum(np.where(d, sizes[order], 0.0))
    last_of_tie = np.r_[s[1:] < s[:-1], True]
    ok = np.flatnonzero(last_of_tie & (precision >= target))
    if len(ok) == 0 or not reached[ok].max() > 0:
        return Efficiency(None, got, 0.0, None, target,
                          f"no threshold reaches precision {target:g} with unused bytes")
    best = ok[int(np.argmax(reached[ok]))]
    return Efficiency(got / float(reached[best]), got, float(reached[best]), float(s[best]),
                      target)


@dataclass(frozen=True)
class WeeklyRun:
    """One weekly run of one method: what it suggested (then deleted), what came back."""

    at: float  # days since the epoch (features.days)
    window_days: float  # how long after the run a use counts against it
    suggested: int
    false_positives: int
    suggested_bytes: float

    @property
    def precision(self) -> float:
        return 1 - self.false_positives / self.suggested if self.suggested else 1.0


@dataclass
class Weekly:
    """A method's weekly runs; the first is the backlog, the later ones the steady state."""

    runs: list[WeeklyRun] = field(default_factory=list)

    @property
    def later(self) -> list[WeeklyRun]:
        return self.runs[1:]

    @property
    def precision(self) -> float:
        """Pooled over the runs after the first: 1 when they suggested nothing."""
        n = sum(r.suggested for r in self.later)
        fp = sum(r.false_positives for r in self.later)
        return 1 - fp / n if n else 1.0

    @property
    def worst(self) -> WeeklyRun | None:
        """The later run with the lowest precision (None when none suggested anything)."""
        busy = [r for r in self.later if r.suggested]
        return min(busy, key=lambda r: (r.precision, r.at)) if busy else None

    def as_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "runs": len(self.runs),
            "later_suggested": sum(r.suggested for r in self.later),
            "later_false_positives": sum(r.false_positives for r in self.later),
            "later_precision": self.precision,
            "worst_precision": worst.precision if worst else None,
            "worst_at": to_datetime(worst.at).isoformat() if worst else None,
            "per_run": [{"at": to_datetime(r.at).isoformat(), "window_days": r.window_days,
                         "suggested": r.suggested, "false_positives": r.false_positives,
                         "suggested_bytes": r.suggested_bytes} for r in self.runs],
        }


Suggester = Callable[[pd.DataFrame], np.ndarray]


def weekly_runs(h: History, config: Config, methods: dict[str, Suggester], *, start: float,
                end: float, every: float = 7.0) -> dict[str, Weekly]:
    """Run each method at ``start``, ``start + every``, ... (before ``end``) on the eligible
    units it has not deleted yet; a suggestion is false when the unit is used in
    ``(run, end]``. ``methods`` map a name to ``suggest(frame) -> bool array``.

    The guardrails of later runs are those of the recorded history, where the deletions did
    not happen: a deleted unit was eligible (not among the last N versions, not protected), so
    it cannot be what keeps another one."""
    gone: dict[str, set[tuple[str, str]]] = {name: set() for name in methods}
    out = {name: Weekly() for name in methods}
    s = start
    while s < end - 1e-9:
        frame = label_snapshot(h, config, s, end - s)
        keys = list(zip(frame["repository"], frame["digest"], strict=True))
        eligible = frame["eligible"].to_numpy(dtype=bool)
        used = frame["dead"].to_numpy() == 0
        size = frame["bytes"].to_numpy(dtype=float)
        if "size_known" in frame:
            size = np.where(frame["size_known"].to_numpy(dtype=bool), size, 0.0)
        for name, suggest in methods.items():
            deleted = gone[name]
            present = np.array([k not in deleted for k in keys], dtype=bool)
            chosen = np.asarray(suggest(frame), dtype=bool) & eligible & present
            deleted.update(keys[i] for i in np.flatnonzero(chosen))
            out[name].runs.append(WeeklyRun(s, end - s, int(chosen.sum()),
                                            int((chosen & used).sum()),
                                            float(size[chosen].sum())))
        s += every
    return out
