"""Point processes for "when": working-hours bursts, steady rates, decaying tails, periods.

All take and return integer nanoseconds since the epoch (UTC) and a numpy ``Generator``, so a
seed fixes every instant.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decaying", "periodic", "poisson", "workdays"]

_DAY = 86_400_000_000_000
_HOUR = 3_600_000_000_000


def workdays(rng: np.random.Generator, start: int, end: int, per_weekday: float, *,
             weekend: float = 0.12) -> np.ndarray:
    """Events of people at work: Poisson per day, far fewer at weekends, around 14:00 UTC."""
    if end <= start or per_weekday <= 0:
        return np.zeros(0, dtype=np.int64)
    first = start - start % _DAY
    days = np.arange(first, end, _DAY, dtype=np.int64)
    # 1970-01-01 was a Thursday: day index + 3 mod 7 gives Monday = 0
    weekday = ((days // _DAY) + 3) % 7
    rate = np.where(weekday < 5, per_weekday, per_weekday * weekend)
    counts = rng.poisson(rate)
    base = np.repeat(days, counts)
    offset = np.clip(rng.normal(14.0, 2.8, len(base)), 5.0, 23.9) * _HOUR
    t = base + offset.astype(np.int64) + rng.integers(0, 1_000_000_000, len(base))
    t = t[(t >= start) & (t < end)]
    t.sort()
    return t


def poisson(rng: np.random.Generator, start: int, end: int, per_day: float) -> np.ndarray:
    """A steady Poisson process (machines: node churn, scanners, janitors)."""
    if end <= start or per_day <= 0:
        return np.zeros(0, dtype=np.int64)
    n = rng.poisson(per_day * (end - start) / _DAY)
    t = rng.integers(start, end, n, dtype=np.int64)
    t.sort()
    return t


def decaying(rng: np.random.Generator, start: int, end: int, per_day: float,
             half_life_days: float) -> np.ndarray:
    """Rate ``per_day * 2**(-age/half_life)`` from ``start``: the tail of a superseded image."""
    if end <= start or per_day <= 0:
        return np.zeros(0, dtype=np.int64)
    lam = np.log(2) / (half_life_days * _DAY)
    span = end - start
    total = per_day / _DAY * (1 - np.exp(-lam * span)) / lam
    n = rng.poisson(total)
    u = rng.random(n)
    # inverse of the cumulative intensity, truncated at ``end``
    x = -np.log(1 - u * (1 - np.exp(-lam * span))) / lam
    t = start + x.astype(np.int64)
    t.sort()
    return t


def periodic(rng: np.random.Generator, start: int, end: int, period_days: float, *,
             jitter_hours: float = 1.0) -> np.ndarray:
    """A schedule (cron): every ``period_days`` from a random phase, a little jitter."""
    period = int(period_days * _DAY)
    if end <= start or period <= 0:
        return np.zeros(0, dtype=np.int64)
    phase = int(rng.integers(0, period))
    base = np.arange(start + phase, end, period, dtype=np.int64)
    jitter = (rng.random(len(base)) * jitter_hours * _HOUR).astype(np.int64)
    t = base + jitter
    return t[t < end]
