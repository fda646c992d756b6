"""A registry backend with only the synchronous face, as a backend on a blocking SDK is: the
Distribution backend's ``open_registry`` and nothing else, so the factory must run it in
threads for the scan. Registered in tests as ``KINDS["sync-only"]``."""

from __future__ import annotations

from recommender.registry.distribution import open_registry

__all__ = ["open_registry"]
