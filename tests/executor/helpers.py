"""Shared helpers of the executor tests: suggestions, configs, a clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from recommender import config as config_mod

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Suggestion:
    """The fields the recommender's Suggestion carries (D's record) that decisions read."""

    repository: str
    digest: str
    tags: list[str] = field(default_factory=list)
    score: float = 0.9
    suggested: bool = True
    reclaimable_bytes: int = 1000
    reasons: list[str] = field(default_factory=lambda: ["idle 90 days"])
    blocked_by: list[str] = field(default_factory=list)
    batch: str = ""
    kind: str = "release"
    members: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.batch:
            self.batch = f"{self.repository}::{self.kind}"


def make_config(tmp_path: Any, *, min_approvals: int = 1, cool_off: str = "24h",
                extra: str = "") -> config_mod.Config:
    path = tmp_path / "tagwarden.toml"
    path.write_text(
        f"""{extra}
[[team]]
name = "payments"
repositories = ["payments/*"]
channel = "C0PAY"
approvers = ["U0ALICE", "U0BOB"]
cool_off = "{cool_off}"
min_approvals = {min_approvals}
""",
        encoding="utf-8",
    )
    return config_mod.load(path, env={})


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def later(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)
