"""Executor benchmark: 1,000 approved deletions against the local registry (target: under 60 s).

Run: ``.venv/bin/python bench/execute.py [--items 1000] [--repos 10] [--workers 8] [--db URL]``.

Set-up (not timed): a fresh Debian ``docker-registry`` on loopback, ``--items`` small real
images pushed across ``--repos`` repositories (one tag each, a base layer shared per
repository), recorded in a fresh store as a scan would, suggested, approved, past the cooling-
off. Timed: one ``Executor.run_due`` -- guardrails evaluated for every candidate, then per item
the store re-checks (use since the suggestion, running pods, new tags), ``HEAD`` by digest,
every tag re-resolved with the full ``Accept`` list, ``DELETE`` by digest, and the result with
its audit rows (every registry call) committed. The audit chain is verified afterwards (timed
separately).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender import config as config_mod  # noqa: E402
from recommender import decisions  # noqa: E402
from recommender.audit import AuditLog  # noqa: E402
from recommender.executor import CallLog, Executor  # noqa: E402
from recommender.registry.local import LocalRegistry  # noqa: E402
from recommender.registry.push import (  # noqa: E402
    PushedImage,
    layer_tar,  # noqa: E402
    push_image,
)
from recommender.registry.sync import RegistryClient  # noqa: E402
from recommender.store import open_store  # noqa: E402
from recommender.store.tables import (  # noqa: E402
    blobs,
    manifest_blobs,
    manifests,
    tag_history,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

CONFIG = """
[registry]
url = "{url}"
gc_config = "{gc}"

[executor]
workers = {workers}

[[team]]
name = "platform"
repositories = ["*"]
channel = "C0PLATFORM"
approvers = ["U0ALICE"]
cool_off = "24h"

[[policy]]
repositories = ["*"]
protected_tags = ["latest"]
keep_production = 0
keep_other = 0
min_age = "0s"
keep_deployed_within = "0s"
"""


@dataclass
class Suggestion:
    repository: str
    digest: str
    tags: list[str]
    reclaimable_bytes: int
    score: float = 0.95
    suggested: bool = True
    reasons: list[str] = field(default_factory=lambda: ["bench"])
    blocked_by: list[str] = field(default_factory=list)
    kind: str = "release"

    @property
    def batch(self) -> str:
        return f"{self.repository}::{self.kind}"


def _push_all(client: RegistryClient, items: int, repos: int) -> list[PushedImage]:
    bases = {r: layer_tar(("base", r), 2048) for r in range(repos)}

    def one(i: int) -> PushedImage:
        r = i % repos
        return push_image(client, f"bench/app{r}", f"v{i}", layers=[bases[r], 512],
                          seed=("bench", i))

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(items)))


def _record(store, images: list[PushedImage]) -> None:  # type: ignore[no-untyped-def]
    seen = T0 - timedelta(days=30)
    with store.begin() as conn:
        conn.execute(manifests.insert(), [
            {"repository": m.repository, "digest": m.digest, "media_type": m.media_type,
             "size": m.size, "total_bytes": m.size + sum(m.blobs.values()), "first_seen": seen,
             "last_scanned": seen, "is_index": False} for m in images])
        sizes = {b: s for m in images for b, s in m.blobs.items()}
        conn.execute(blobs.insert(), [{"digest": b, "size": s} for b, s in sizes.items()])
        conn.execute(manifest_blobs.insert(), [
            {"repository": m.repository, "digest": m.digest, "blob": b}
            for m in images for b in m.blobs])
        conn.execute(tag_history.insert(), [
            {"repository": m.repository, "tag": m.tag, "digest": m.digest, "valid_from": seen,
             "source": "scan"} for m in images])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--repos", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--db", help="store URL (default: a fresh SQLite file)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tagwarden-bench-execute-"))
    registry = LocalRegistry(root=tmp / "registry").start()
    try:
        path = tmp / "tagwarden.toml"
        path.write_text(CONFIG.format(url=registry.url, gc=registry.config_path,
                                      workers=args.workers), encoding="utf-8")
        cfg = config_mod.load(path, env={})
        store = open_store(args.db or f"sqlite:///{tmp / 'store.db'}")
        calls = CallLog()
        client = RegistryClient(registry.url, recorder=calls)
        t = time.perf_counter()
        images = _push_all(client, args.items, args.repos)
        _record(store, images)
        suggestions = [Suggestion(m.repository, m.digest, [m.tag or ""], sum(m.blobs.values()))
                       for m in images]
        recorded = decisions.record_batches(store, suggestions, now=T0, config=cfg)
        for batch in recorded:
            decisions.approve(store, batch_id=batch.id, user_id="U0ALICE",
                              now=T0 + timedelta(hours=1))
        setup = time.perf_counter() - t

        executor = Executor(store, client, cfg, calls=calls)
        t = time.perf_counter()
        report = executor.run_due(T0 + timedelta(hours=26))
        elapsed = time.perf_counter() - t
        t = time.perf_counter()
        verified = AuditLog(store).verify()
        verify_s = time.perf_counter() - t
        client.close()
        store.dispose()

        deleted = report.count("deleted")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, store {store.dialect}")
        print(f"set-up: {args.items} images pushed, recorded, suggested, approved in "
              f"{setup:.1f} s")
        print(f"run_due: {deleted} deleted of {len(report.outcomes)} due in {elapsed:.2f} s "
              f"({deleted / elapsed:.0f} items/s, {args.workers} workers) -- target < 60 s")
        print(f"reclaimable after the run: {report.reclaimable_bytes} bytes; "
              f"GC: {report.gc_command}")
        print(f"audit: {verified.rows} rows, intact={verified.ok}, verified in {verify_s:.2f} s")
        return 0 if deleted == args.items and verified.ok else 1
    finally:
        registry.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
