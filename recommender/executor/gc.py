"""What the deletions leave to the registry's garbage collection: the command, the bytes."""

from __future__ import annotations

from sqlalchemy import Connection

from ..config import Config

__all__ = ["gc_bytes", "gc_command"]


def gc_command(config: Config) -> str:
    """The exact garbage-collect command to run after deletions (space returns only then)."""
    path = config["registry.gc_config"] or "<registry config.yml (set registry.gc_config)>"
    return f"docker-registry garbage-collect {path}"


def gc_bytes(conn: Connection, keys: list[tuple[str, str]]) -> int:
    """Layer-deduplicated bytes the deletions make eligible for garbage collection."""
    if not keys:
        return 0
    from ..inventory import reclaimable_bytes

    return int(reclaimable_bytes(conn, keys))
