"""What one scan found per repository, and the report of the whole scan."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..registry import Manifest

__all__ = ["RepoResult", "ScanReport", "Seen"]


@dataclass
class ScanReport:
    """What one scan saw and changed. ``errors``: one dict per repository or tag that failed."""

    scan_id: int
    registry: str
    repositories: int = 0
    tags: int = 0
    manifests: int = 0
    blobs: int = 0
    tags_opened: int = 0
    tags_closed: int = 0
    manifests_deleted: int = 0
    seconds: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"scanned {self.repositories} repositories, {self.tags} tags, "
                f"{self.manifests} manifests, {self.blobs} blobs in {self.seconds:.1f}s; "
                f"tags opened {self.tags_opened}, closed {self.tags_closed}; "
                f"manifests gone {self.manifests_deleted}; errors {len(self.errors)}")


@dataclass
class Seen:
    """One manifest as fetched, with what its config blob said."""

    manifest: Manifest
    created: datetime | None = None
    labels: dict[str, str] | None = None
    platform: str | None = None
    subject: str | None = None
    referrer: str | None = None


@dataclass
class RepoResult:
    repository: str
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest
    seen: dict[str, Seen] = field(default_factory=dict)  # digest -> manifest
    children: list[tuple[str, str, str | None]] = field(default_factory=list)
    failed_tags: set[str] = field(default_factory=set)  # listed but not read: left as known
    gone: set[str] = field(default_factory=set)  # known digests no longer reachable
    alive_untagged: set[str] = field(default_factory=set)
