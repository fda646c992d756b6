"""A synchronous :class:`~.protocol.Registry` behind the asyncio face a scan needs, its calls
run in worker threads: a backend on a blocking SDK (boto3) writes only the synchronous one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .models import Manifest, Referrer
from .protocol import ImageRecord, ReclaimHint, Registry

__all__ = ["ThreadedRegistry"]

T = TypeVar("T")


class ThreadedRegistry:
    """:class:`~.protocol.AsyncRegistry` over ``registry``, at most ``workers`` calls at once."""

    def __init__(self, registry: Registry, *, workers: int) -> None:
        self.registry = registry
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="tagwarden-registry")

    @property
    def location(self) -> str:
        return self.registry.location

    @property
    def reclaim(self) -> ReclaimHint:
        return self.registry.reclaim

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def repositories(self) -> list[str]:
        return await self._run(self.registry.repositories)

    async def list_tags(self, repo: str) -> list[str]:
        return await self._run(self.registry.list_tags, repo)

    async def list_images(self, repo: str) -> list[ImageRecord] | None:
        return await self._run(self.registry.list_images, repo)

    async def get_manifest(self, repo: str, ref: str) -> Manifest:
        return await self._run(self.registry.get_manifest, repo, ref)

    async def head_manifest(self, repo: str, ref: str) -> str | None:
        return await self._run(self.registry.head_manifest, repo, ref)

    async def get_blob(self, repo: str, digest: str) -> bytes:
        return await self._run(self.registry.get_blob, repo, digest)

    async def referrers(self, repo: str, digest: str) -> list[Referrer]:
        return await self._run(self.registry.referrers, repo, digest)

    async def close_idle(self) -> None:
        """Nothing is bound to the event loop: the threads and their connections stay."""

    async def aclose(self) -> None:
        self._pool.shutdown(wait=True)
        self.registry.close()

    async def __aenter__(self) -> ThreadedRegistry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
