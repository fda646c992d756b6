"""ECR scan benchmark: ``tagwarden scan`` of an Amazon ECR registry of ``--images`` images on
moto's ECR server (behind the ECR-like front of ``tests/support/ecr.py``), into a fresh SQLite
store.

Run: ``.venv/bin/python bench/scan_ecr.py [--images 2000] [--repositories 20] [--rounds 3]``.

Each round: a first scan (every manifest read: one ``batch_get_image`` per new image, through
the factory's threaded face at ``registry.concurrency``), then a re-scan of the unchanged
registry (``describe_images`` only: known digests are not read again). Reported per scan:
wall seconds, this process's CPU seconds (the server runs in it too, so CPU is the client's
and moto's together) and the API calls the server answered, by operation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender import inventory, registry  # noqa: E402
from recommender.config import load  # noqa: E402
from recommender.store import open_store  # noqa: E402
from tests.support.ecr import REGION, EcrServer, ecr_server  # noqa: E402

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _push(ecr: EcrServer, images: int, repositories: int) -> None:
    for r in range(repositories):
        ecr.create_repository(f"team{r % 5}/app{r}")
    for i in range(images):
        repo = f"team{(i % repositories) % 5}/app{i % repositories}"
        ecr.push_image(repo, f"build-{i}", seed=f"bench{i}", layer_sizes=(1000 + i, 5000))


def _scan(store, config, now: datetime) -> tuple[float, float, inventory.ScanReport]:  # type: ignore[no-untyped-def]
    client = registry.open_async(config)
    started, cpu = time.perf_counter(), time.process_time()

    async def run() -> inventory.ScanReport:
        try:
            return await inventory.scan_async(store, client, now=now,
                                              concurrency=config["registry.concurrency"])
        finally:
            await client.aclose()

    report = asyncio.run(run())
    return time.perf_counter() - started, time.process_time() - cpu, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repositories", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION=REGION)
    for generator in [ecr_server()]:
        ecr = next(generator)
        try:
            started = time.perf_counter()
            _push(ecr, args.images, args.repositories)
            print(f"pushed {args.images} images into {args.repositories} repositories "
                  f"with put_image in {time.perf_counter() - started:.1f} s")
            config = load(env={}, overrides={
                "registry.kind": "ecr", "registry.region": REGION,
                "registry.endpoint_url": ecr.url, "registry.concurrency": args.concurrency})
            print(f"load average {os.getloadavg()[0]:.1f}")
            for round_ in range(1, args.rounds + 1):
                with tempfile.TemporaryDirectory() as tmp:
                    store = open_store(f"sqlite:///{tmp}/store.db")
                    try:
                        for label, now in (("first", T0), ("rescan", T0 + timedelta(hours=6))):
                            mark = len(ecr.calls)
                            wall, cpu, report = _scan(store, config, now)
                            calls = Counter(ecr.calls[mark:])
                            assert not report.errors, report.errors[:3]
                            assert report.manifests == (args.images if label == "first" else 0)
                            print(f"round {round_} {label:6}: {wall:6.2f} s wall, {cpu:6.2f} s "
                                  f"CPU, {report.repositories} repositories, {report.tags} "
                                  f"tags, {report.manifests} manifests read; calls "
                                  f"{dict(sorted(calls.items()))}; load "
                                  f"{os.getloadavg()[0]:.1f}")
                    finally:
                        store.dispose()
        finally:
            generator.close()


if __name__ == "__main__":
    main()
