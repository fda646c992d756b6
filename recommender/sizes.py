"""Sizes as people read them: decimal units (kB, MB, GB, as registries show them), and an
unknown size said so.

The store knows a manifest's size only once a scan has read it (registry events alone do not
carry the layers): an unknown size is shown as unknown, never as zero. The CLI, the Slack
messages and the demo report all print sizes through :func:`human_bytes`.
"""

from __future__ import annotations

__all__ = ["UNKNOWN", "human_bytes", "total_text"]

UNKNOWN = "size unknown"


def human_bytes(n: int | float | None, unknown: str = UNKNOWN) -> str:
    """``n`` bytes in decimal units like registries show them; ``unknown`` for ``None``."""
    if n is None or n != n:  # None or NaN
        return unknown
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def total_text(sizes: list[int | None]) -> str:
    """The sum of the known sizes, followed by how many of them are unknown in brackets;
    ``size unknown`` when none is known."""
    known = [s for s in sizes if s is not None]
    if not known and sizes:
        return UNKNOWN
    text = human_bytes(sum(known))
    missing = len(sizes) - len(known)
    if missing:
        text += f" ({missing} of {len(sizes)} sizes unknown)"
    return text
