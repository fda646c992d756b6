"""Operating thresholds: the lowest score that reaches a precision target, on whole snapshots
and on the steady-state subset, and the error bound reported beside them.

:mod:`.model` explains why two populations are looked at; this module only does the counting.
"""

from __future__ import annotations

import numpy as np

__all__ = ["choose_steady_threshold", "choose_threshold", "error_bound"]


def choose_threshold(scores: np.ndarray, dead: np.ndarray, target: float) -> float:
    """The lowest score whose suggestions (score >= it) reach ``target`` precision.

    Ties move together: a threshold cannot split units with the same score. Returns a value
    above 1 (suggest nothing) when even the most confident units miss the target.
    """
    if len(scores) == 0:
        return 1.01
    order = np.argsort(-scores, kind="stable")
    s, d = scores[order], dead[order].astype(float)
    correct = np.cumsum(d)
    n = np.arange(1, len(s) + 1)
    precision = correct / n
    # Only positions where the next score is lower are valid cut points.
    last_of_tie = np.r_[s[1:] < s[:-1], True]
    ok = np.flatnonzero(last_of_tie & (precision >= target))
    if len(ok) == 0:
        return 1.01
    return float(s[ok[-1]])


def _at_least(values: np.ndarray, weights: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """For each cut: the sum of ``weights`` whose value is >= the cut."""
    order = np.argsort(values, kind="stable")
    above = np.r_[np.cumsum(weights[order][::-1])[::-1], 0.0]
    return above[np.searchsorted(values[order], cuts, side="left")]


def choose_steady_threshold(scores: np.ndarray, dead: np.ndarray, previous: np.ndarray,
                            target: float) -> tuple[float, float, float]:
    """The lowest score at which suggestions reach ``target`` precision both on every row and
    on the steady-state subset; returns it, then the whole rows' and the subset's own lowest.

    ``previous`` is each row's score at the previous cut-off (``-inf`` when it was not eligible
    there). At a threshold ``c`` the subset is the rows with ``previous < c``: what a registry
    cleaned at every cut-off with threshold ``c`` still holds and judges (new, or kept last
    time). Its precision is not monotone in ``c``, so every distinct score is tried. An empty
    subset constrains nothing; a value above 1 means no threshold reaches the target.
    """
    if len(scores) == 0:
        return 1.01, 1.01, 1.01
    cuts = np.unique(scores)  # ascending; ties move together, as in choose_threshold
    ones = np.ones(len(scores))
    d = dead.astype(float)
    both = np.minimum(scores, previous)  # suggested now AND already at the previous run
    n_all, d_all = _at_least(scores, ones, cuts), _at_least(scores, d, cuts)
    n_sub = n_all - _at_least(both, ones, cuts)
    d_sub = d_all - _at_least(both, d, cuts)
    ok_all = d_all / n_all >= target  # n_all >= 1 at every cut: the cut's own rows
    # An empty subset suggests nothing, so it cannot miss.
    ok_sub = np.where(n_sub > 0, d_sub / np.maximum(n_sub, 1), 1.0) >= target

    def lowest(ok: np.ndarray) -> float:
        hit = np.flatnonzero(ok)
        return float(cuts[hit[0]]) if len(hit) else 1.01

    return lowest(ok_all & ok_sub), lowest(ok_all), lowest(ok_sub & (n_sub > 0))


def error_bound(suggested: int, false_positives: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on the share of suggestions used again.

    Reported beside the point estimate, not used to choose the threshold: with no false
    positive at all it is ``1 - (1 - confidence) ** (1 / n)``, which reaches 0.001 (precision
    0.999) only from n = 2,995 suggestions, more than the steady-state subset of a fleet's
    validation snapshots holds."""
    from scipy.stats import beta

    if suggested == 0:
        return 1.0
    if false_positives >= suggested:
        return 1.0
    return float(beta.ppf(confidence, false_positives + 1, suggested - false_positives))


# --- train and backtest -----------------------------------------------------------------------
