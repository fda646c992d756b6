"""Long-gap reuse, as a knob: how often images come back after weeks or months of silence.

No one knows how often long-idle images come back in a given organisation; it varies, and a
model must hold across the range. ``FleetSpec.reuse`` (``--reuse``) picks one of three levels,
each a set of archetype parameters; every mechanism is one a real team would recognise:

- a release rolled back weeks or months after it was superseded (``release.late_rollback``);
- another team pinning a release by digest for months (``release.pinned``);
- monthly and quarterly batch jobs (``cron.periods_days``);
- an old job version re-run by hand, a backfill with the code that made the data
  (``cron.manual_rerun``);
- base images pinned by legacy builds, pulls decaying after a new base ships
  (``base.legacy_pin``, ``base.tail_half_life_days``);
- mirrored upstream versions pinned by a few consumers (``mirror.pinned``);
- an abandoned experiment revisited months later (``experiment.revisit``);
- a disaster-recovery drill restoring last quarter's release (``release.dr_drill``).

``medium`` changes nothing: it is the generator as it was before the knob, so fleets generated
before stay reproducible. The mechanisms added with the knob (manual re-runs, mirror pins,
drills) are off at ``medium`` and ``low`` and draw from their own random stream
(``Repo.reuse_rng``). The rates were set from what the mechanisms are, not from any model
result; data/README.md tabulates them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .archetypes import ExperimentParams, ReleaseParams
from .infra import BaseParams, CronParams, MirrorParams
from .spec import REUSE_LEVELS

__all__ = ["LEVELS", "REUSE_LEVELS", "archetype_params"]

_DEFAULTS: dict[str, Any] = {
    "release": ReleaseParams(),
    "cron": CronParams(),
    "base": BaseParams(),
    "mirror": MirrorParams(),
    "experiment": ExperimentParams(),
}

# What each level changes from the archetypes' defaults (= medium).
LEVELS: dict[str, dict[str, dict[str, Any]]] = {
    "low": {
        "release": {"late_rollback": 0.01, "pinned": 0.03},
        "cron": {"periods_days": (7.0, 7.0, 14.0, 30.0)},
        "base": {"legacy_pin": 0.08, "tail_half_life_days": (3.0, 14.0)},
        "experiment": {"revisit": 0.05},
    },
    "medium": {},
    "high": {
        "release": {"late_rollback": 0.08, "late_rollback_days": (14.0, 180.0),
                    "pinned": 0.25, "dr_drill": 0.5},
        "cron": {"periods_days": (30.0, 30.0, 91.0, 91.0), "manual_rerun": 0.15},
        "base": {"legacy_pin": 0.5, "tail_half_life_days": (14.0, 90.0)},
        "mirror": {"pinned": 0.25},
        "experiment": {"revisit": 0.4},
    },
}


def archetype_params(level: str) -> dict[str, Any]:
    """The ``*Params`` of each archetype the level touches, by archetype name."""
    return {kind: replace(params, **LEVELS[level].get(kind, {}))
            for kind, params in _DEFAULTS.items()}
