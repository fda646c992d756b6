"""What the deletions leave to the registry's reclaiming of storage: the bytes."""

from __future__ import annotations

from sqlalchemy import Connection

__all__ = ["gc_bytes"]


def gc_bytes(conn: Connection, keys: list[tuple[str, str]]) -> int:
    """Layer-deduplicated bytes the deletions make reclaimable (at once or by the registry's
    garbage collection: the registry's :class:`~recommender.registry.ReclaimHint` says)."""
    if not keys:
        return 0
    from ..inventory import reclaimable_bytes

    return int(reclaimable_bytes(conn, keys))
