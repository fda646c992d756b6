"""What a demo run produced: its size and every figure the summary and the report show.

Its own module so that ``run`` (which fills it) and ``report`` (which draws it) both import it
and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .storage import StorageFigures

__all__ = ["FULL", "QUICK", "DemoResult", "DemoSize"]


@dataclass(frozen=True)
class DemoSize:
    seed: int
    repositories: int
    days: int
    byte_scale: float = 0.001  # layers scaled down to a thousandth, as real gzip'd tars


FULL = DemoSize(seed=4, repositories=8, days=120)
QUICK = DemoSize(seed=5, repositories=6, days=90)



@dataclass
class DemoResult:
    """Everything the summary and the HTML report show."""

    size: DemoSize
    now: datetime
    steps: list[tuple[str, float, str]] = field(default_factory=list)
    pushed: dict[str, int] = field(default_factory=dict)
    replay: dict[str, int] = field(default_factory=dict)
    live_events: int = 0  # sent by the registry itself after the replay, by usage class:
    live_by_usage: dict[str, int] = field(default_factory=dict)
    storage_before: StorageFigures | None = None
    storage_after_execute: StorageFigures | None = None
    storage_after: StorageFigures | None = None
    train_output: str = ""
    backtest: dict[str, Any] = field(default_factory=dict)
    suggestions: list[dict[str, Any]] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    approved_batch: str = ""
    approved_at: datetime | None = None
    executed_at: datetime | None = None
    execution: dict[str, Any] = field(default_factory=dict)
    slack_messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    slack_mode: str = "fake"
    registry_kind: str = "distribution"  # or "ecr": moto's server, CloudTrail replayed
    images_after: list[str] = field(default_factory=list)  # ecr: repo@digest still listed
    endpoints: dict[str, str] = field(default_factory=dict)  # what was started (all stopped)
    workdir: str = ""  # the temporary directory (removed at the end)
    total_seconds: float = 0.0
