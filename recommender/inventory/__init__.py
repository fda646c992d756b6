"""The inventory: what a registry holds (the scan) and what the store knows per manifest.

Write side: :func:`scan` walks a registry with bounded concurrency (catalog → tags → manifests
→ index children → config blobs) and records ``scans``, ``manifests``, ``blobs``,
``manifest_blobs``, ``manifest_children`` and the current tag → digest map into ``tag_history``
(source ``scan``), reconciling with what telemetry wrote: a tag that moved without us seeing
the push is corrected, a tag no longer listed is closed, and a manifest no longer listed is
marked deleted only when it is not reachable by digest either (untagged is not gone).

Read side, used by the policy, the recommender and the executor: :func:`reclaimable_bytes`
(layer-deduplicated), :func:`list_inventory`, :func:`running_digests`, :func:`current_tags`.

The modules, by noun: :mod:`.scan` (walking the registry), :mod:`.write` (recording what a
scan saw), :mod:`.report` (what a scan found and did) and :mod:`.queries` (the read side).
"""

from .queries import current_tags, list_inventory, reclaimable_bytes, running_digests
from .report import ScanReport
from .scan import scan, scan_async

__all__ = [
    "ScanReport",
    "current_tags",
    "list_inventory",
    "reclaimable_bytes",
    "running_digests",
    "scan",
    "scan_async",
]
