"""The fleet's images into the real registry, and its months of history into the collector.

Pushing happens BEFORE the registry's notifications are switched on. The generated history
already holds every push at its simulated time; the registry's own notification of the bulk
upload would record a second push of every image at today's date, and every image would look
freshly built. Once the upload is done the demo restarts the registry with notifications
pointed at ``tagwarden serve``: from then on what the registry sees (the scan's reads, the
executor's deletes) arrives live, as in production.

The history is replayed over HTTP in the order the collector would have received it: the
Distribution envelopes (a few hundred events per POST, as a busy registry batches them), then
deploy events, then the pod lists with ``?at=`` — the injected clock that lets months pass in
seconds. Duplicated and re-ordered envelopes are replayed as generated: the collector must cope.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from recommender.fleet import images
from recommender.registry.sync import RegistryClient

from .services import DemoError

__all__ = ["Poster", "PushResult", "ReplayResult", "fleet_records", "push_fleet",
           "replay_history", "replay_usage"]

_KIND_ORDER = {"image": 0, "index": 1, "signature": 2}  # children before parents


@dataclass
class PushResult:
    manifests: int = 0
    tags: int = 0
    blobs: int = 0
    bytes: int = 0


@dataclass
class ReplayResult:
    envelopes: int = 0
    events: int = 0
    accepted: int = 0
    deploys: int = 0
    snapshots: int = 0
    requests: int = 0


def fleet_records(inventory: Path) -> list[dict[str, Any]]:
    with inventory.open("rb") as fh:
        alive = [r for r in map(orjson.loads, fh) if not r.get("deleted_at")]
    return sorted(alive, key=lambda r: (_KIND_ORDER.get(r.get("kind", "image"), 2),
                                        r["pushed_at"]))


def push_fleet(client: RegistryClient, fleet_dir: Path, *, byte_scale: float,
               workers: int = 8, progress: Callable[[int, int], None] | None = None,
               ) -> PushResult:
    """Push every alive manifest of the fleet (blobs, manifest by digest, then its tags)."""
    records = fleet_records(fleet_dir / "inventory.jsonl")
    result = PushResult()

    def push(record: dict[str, Any]) -> tuple[int, int, int]:
        m = images.materialize(record, byte_scale=byte_scale)
        for data in m.blobs.values():
            client.push_blob(m.repository, data)
        client.put_manifest(m.repository, m.digest, m.manifest, m.media_type)
        for tag in record.get("tags") or []:
            client.put_manifest(m.repository, tag, m.manifest, m.media_type)
        return len(record.get("tags") or []), len(m.blobs), sum(map(len, m.blobs.values()))

    # Each kind in its own wave: an index needs its platform manifests in the registry first.
    done = 0
    for rank in sorted(set(_KIND_ORDER.values())):
        # a kind we do not know yet goes last, after the manifests it may refer to
        wave = [r for r in records if _KIND_ORDER.get(r.get("kind", "image"), 2) == rank]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for tags, blobs, size in pool.map(push, wave):
                result.manifests += 1
                result.tags += tags
                result.blobs += blobs
                result.bytes += size
                done += 1
                if progress:
                    progress(done, len(records))
    return result


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Poster:
    def __init__(self, http: httpx.Client, base_url: str, token: str) -> None:
        self.http = http
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: bytes, content_type: str,
             params: dict[str, str] | None = None) -> dict[str, Any]:
        for _attempt in range(20):
            try:
                response = self.http.post(f"{self.base_url}{path}", content=body, params=params,
                                          headers={**self.headers, "Content-Type": content_type})
            except httpx.HTTPError as exc:
                raise DemoError(f"POST {path}: {type(exc).__name__}: {exc} (is tagwarden serve "
                                "still running?)", step="replay", path=path) from exc
            if response.status_code == 503:  # the collector asks to retry (Retry-After: 1)
                continue
            if response.status_code != 200:
                raise DemoError(f"POST {path} answered {response.status_code}: "
                                f"{response.text[:500]}", step="replay", path=path)
            answer: dict[str, Any] = response.json()
            return answer
        raise DemoError(f"POST {path} kept answering 503", step="replay", path=path)


def replay_history(base_url: str, token: str, fleet_dir: Path, *, events_per_post: int = 400,
                   workers: int = 4, progress: Callable[[str], None] | None = None,
                   ) -> ReplayResult:
    """POST the fleet's history to the collector; return what was sent and accepted."""
    result = ReplayResult()

    def envelopes() -> Iterator[dict[str, Any]]:
        with gzip.open(fleet_dir / "distribution.jsonl.gz", "rb") as fh:
            for line in fh:
                doc = orjson.loads(line)
                result.envelopes += 1
                yield from doc["events"]

    def send_events(poster: Poster, chunk: list[dict[str, Any]]) -> int:
        answer = poster.post("/v1/events/distribution", orjson.dumps({"events": chunk}),
                             "application/vnd.docker.distribution.events.v1+json")
        return int(answer.get("accepted", 0))

    return replay_usage(base_url, token, fleet_dir, envelopes(), send_events,
                        per_post=events_per_post, workers=workers, progress=progress,
                        result=result)


def replay_usage(base_url: str, token: str, fleet_dir: Path, events: Iterable[dict[str, Any]],
                 send: Callable[[Poster, list[dict[str, Any]]], int], *, per_post: int = 400,
                 workers: int = 4, progress: Callable[[str], None] | None = None,
                 result: ReplayResult | None = None, in_order: bool = False) -> ReplayResult:
    """POST ``events`` (by ``send``, ``per_post`` at a time), then the fleet's deploys and pod
    lists; the registry's own telemetry is the caller's, the cluster's is the same for all.
    ``in_order`` sends ``events`` one POST after another (no reordering between them)."""
    result = result or ReplayResult()
    say = progress or (lambda _msg: None)
    events_per_post = per_post
    with httpx.Client(timeout=60) as http, ThreadPoolExecutor(max_workers=workers) as pool:
        poster = Poster(http, base_url, token)
        chunks = _chunks(events, events_per_post)
        sent = (map if in_order else pool.map)(lambda chunk: send(poster, chunk), chunks)
        for accepted in sent:
            result.accepted += accepted
            result.requests += 1
        result.events = result.accepted
        say(f"{result.envelopes} envelopes replayed")

        with (fleet_dir / "deploys.jsonl").open("rb") as fh:
            deploys = [orjson.loads(line) for line in fh]

        def send_deploys(chunk: list[dict[str, Any]]) -> int:
            return int(poster.post("/v1/events/deploy", orjson.dumps(chunk),
                                   "application/json").get("accepted", 0))

        for accepted in pool.map(send_deploys, _chunks(deploys, events_per_post)):
            result.deploys += accepted
            result.requests += 1
        say(f"{result.deploys} deploy events replayed")

        def send_snapshot(line: bytes) -> None:
            doc = json.loads(line)
            poster.post("/v1/k8s/pods", orjson.dumps(doc["list"]), "application/json",
                        params={"source": doc["source"], "at": doc["taken_at"]})

        with (fleet_dir / "pods.jsonl").open("rb") as fh:
            for _ in pool.map(send_snapshot, fh):
                result.snapshots += 1
                result.requests += 1
        say(f"{result.snapshots} pod lists replayed")
    return result
