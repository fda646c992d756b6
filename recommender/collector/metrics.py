"""The collector's Prometheus metrics, one registry per app instance.

A registry of its own (not prometheus-client's global one) lets several apps live in one process
(tests, the benchmark) without their counters colliding. Counters are bumped once per request or
batch with the aggregated amount, never once per event, so metrics stay cheap at high rates.

With several worker processes (``tagwarden serve --workers N``) the parent sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start: prometheus-client then keeps every value
in a per-process file there, and :meth:`CollectorMetrics.render` sums all workers' files, so
``/metrics`` tells the same totals whichever worker answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .events import Event

__all__ = ["CONTENT_TYPE", "CollectorMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Write latency of one group-commit transaction: from sub-millisecond (SQLite, small batch) to
# seconds (a slow PostgreSQL).
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class CollectorMetrics:
    """Counters and histograms of one collector; ``render()`` gives the exposition text."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._live: list[Collector] = []
        r = self.registry
        self.received = Counter(
            "tagwarden_events_received", "Events accepted for storage, by source and usage class.",
            ["source", "usage"], registry=r,
        )
        self._received: dict[tuple[str, str], Counter] = {}
        self.stored = Counter(
            "tagwarden_events_stored", "Events newly written to the store.", registry=r,
        )
        self.duplicates = Counter(
            "tagwarden_events_duplicate",
            "Events already in the store (a retrying sender); accepted, stored once.", registry=r,
        )
        self.conflicting = Counter(
            "tagwarden_events_conflicting",
            "Events whose id was already stored with other content (a sender reusing ids); "
            "dropped, counted among the duplicates too.", registry=r,
        )
        self.rejected = Counter(
            "tagwarden_requests_rejected",
            "Requests refused, by endpoint source and reason (auth, too_large, payload, "
            "media_type, store).", ["source", "reason"], registry=r,
        )
        self.snapshots = Counter(
            "tagwarden_pod_snapshots", "Kubernetes pod snapshots stored.", registry=r,
        )
        self.write_seconds = Histogram(
            "tagwarden_write_seconds", "Duration of one group-commit write transaction.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_events = Histogram(
            "tagwarden_batch_events", "Events written per group-commit transaction.",
            buckets=_BATCH_BUCKETS, registry=r,
        )
        self.batch_requests = Histogram(
            "tagwarden_batch_requests", "Requests sharing one group-commit transaction.",
            buckets=_BATCH_BUCKETS, registry=r,
        )

    def count_received(self, events: Iterable[Event]) -> None:
        tally: dict[tuple[str, str], int] = {}
        for e in events:
            key = (e.source, e.usage)
            tally[key] = tally.get(key, 0) + 1
        for key, n in tally.items():
            child = self._received.get(key)
            if child is None:  # labels() takes a lock and builds a tuple: do it once per pair
                child = self._received[key] = self.received.labels(*key)
            child.inc(n)

    def reject(self, source: str, reason: str) -> None:
        self.rejected.labels(source, reason).inc()

    def add_live(self, collector: Collector) -> None:
        """A collector that reads its values at each scrape (the store's job runs): the same
        in every worker, so it is asked directly, not summed over the workers' files."""
        self.registry.register(collector)
        self._live.append(collector)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            for collector in self._live:
                merged.register(collector)
            return generate_latest(merged)
        return generate_latest(self.registry)
