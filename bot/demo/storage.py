"""What is really on the registry's disk: manifests, tags, blobs and bytes, read from the
filesystem driver's layout (``docker/registry/v2``), not from what tagwarden believes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["StorageFigures", "measure"]


@dataclass(frozen=True)
class StorageFigures:
    manifests: int  # revision links: manifests the registry serves by digest
    tags: int
    blobs: int  # blob files (layers, configs and manifest bodies)
    bytes: int  # their total size

    def as_dict(self) -> dict[str, int]:
        return {"manifests": self.manifests, "tags": self.tags, "blobs": self.blobs,
                "bytes": self.bytes}


def measure(storage: Path) -> StorageFigures:
    base = storage / "docker" / "registry" / "v2"
    manifests = tags = 0
    repos = base / "repositories"
    if repos.exists():
        for manifests_dir in repos.glob("**/_manifests"):
            manifests += sum(1 for _ in manifests_dir.glob("revisions/*/*/link"))
            tags += sum(1 for _ in manifests_dir.glob("tags/*/current/link"))
    files = list((base / "blobs").glob("*/*/*/data")) if (base / "blobs").exists() else []
    return StorageFigures(manifests, tags, len(files), sum(f.stat().st_size for f in files))
