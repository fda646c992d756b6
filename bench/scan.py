"""Registry scan benchmark: ``tagwarden scan`` against a sequential skopeo-based scan.

1. Start a local docker-registry and fill it with REPOS x TAGS small images (one shared base
   layer mounted everywhere, a unique config per tag), pushed concurrently.
2. Time ``tagwarden scan`` as a user runs it (a subprocess, SQLite store), and the scan itself
   as the report measures it (without the CLI's start-up).
3. Time a sequential skopeo scan: ``skopeo list-tags`` per repository and ``skopeo inspect
   --raw`` per tag. Inspecting all 10,000 tags takes many minutes, so by default a random
   sample of tags is inspected and the total extrapolated (said in the output).

Usage: ``.venv/bin/python bench/scan.py [--repos 100] [--tags 100] [--sample 300]
[--concurrency N] [--dir DIR] [--go-defaults] [--skip-skopeo]``

``--concurrency`` defaults to the product's own default (the setting ``registry.concurrency``,
16), so the bench times what a user gets.

The registry runs as :class:`LocalRegistry` runs it (``GOGC=off GOMEMLIMIT=256MiB``, see its
docstring); ``--go-defaults`` runs it with Go's default GC instead, for comparison. Each line
gives wall time, CPU seconds of both processes, and the 1-minute load average before and after
(wall time grows with other load on the machine; CPU seconds much less).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from recommender.config import SETTINGS
from recommender.registry.local import LocalRegistry
from recommender.registry.push import layer_tar, push_image
from recommender.registry.sync import RegistryClient

ROOT = Path(__file__).resolve().parent.parent


def fill(client: RegistryClient, repos: int, tags: int, workers: int) -> float:
    base = layer_tar("bench-base", 2048)
    start = time.perf_counter()
    first = "bench/repo000"
    client.push_blob(first, base)
    # Mount the shared layer into every repository before the concurrent pushes: with the
    # filesystem driver, concurrent writers of one link file race (a reader can see it
    # empty and the manifest PUT fails with DIGEST_INVALID).
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(lambda r: client.push_blob(f"bench/repo{r:03d}", base,
                                                     mount_from=first), range(1, repos)):
            pass

    def push(job: tuple[int, int]) -> None:
        r, t = job
        repo = f"bench/repo{r:03d}"
        push_image(client, repo, f"t{t:03d}", layers=(base,), seed=(repo, t),
                   created=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=t),
                   mount_from=first)

    jobs = [(r, t) for r in range(repos) for t in range(tags)]
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(push, jobs):
            pass
    return time.perf_counter() - start


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The product's default (the setting registry.concurrency), so the bench times what users get.
_DEFAULT_CONCURRENCY = next(s.default for s in SETTINGS if s.key == "registry.concurrency")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tagwarden_scan(url: str, db: Path, concurrency: int, *extra: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "recommender.cli", "--db", f"sqlite:///{db}", "scan",
         "--registry", url, "--concurrency", str(concurrency), *extra],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"tagwarden scan failed: {done.stderr}")
    return elapsed, done.stdout.strip()


def cli_startup() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "recommender.cli", "--help"], capture_output=True,
                   cwd=ROOT, check=True)
    return time.perf_counter() - start


def skopeo_scan(host: str, repos: int, tags: int, sample: int) -> tuple[float, float, int]:
    """(seconds for list-tags of every repository, seconds per inspect, tags inspected)."""
    start = time.perf_counter()
    listed: list[tuple[str, str]] = []
    for r in range(repos):
        repo = f"bench/repo{r:03d}"
        out = subprocess.run(["skopeo", "list-tags", "--tls-verify=false",
                              f"docker://{host}/{repo}"], capture_output=True, check=True)
        listed.extend((repo, t) for t in json.loads(out.stdout)["Tags"])
    list_seconds = time.perf_counter() - start
    chosen = listed if sample <= 0 or sample >= len(listed) else random.Random(7).sample(
        listed, sample)
    start = time.perf_counter()
    for repo, tag in chosen:
        subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                        f"docker://{host}/{repo}:{tag}"], capture_output=True, check=True)
    per_tag = (time.perf_counter() - start) / max(1, len(chosen))
    return list_seconds, per_tag, len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--push-workers", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=_DEFAULT_CONCURRENCY,
                        help="tagwarden scan's (default: the product's, %(default)s)")
    parser.add_argument("--sample", type=int, default=300,
                        help="tags skopeo inspects (0: all, no extrapolation)")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (kept)")
    parser.add_argument("--go-defaults", action="store_true",
                        help="run docker-registry with Go's default GC (GOGC=100)")
    parser.add_argument("--skip-skopeo", action="store_true", help="time tagwarden only")
    args = parser.parse_args()
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed (apt-get install skopeo)")

    work = args.dir or Path(tempfile.mkdtemp(prefix="tagwarden-bench-scan-"))
    filled = (work / "registry" / "storage" / "docker").exists()
    registry = LocalRegistry(work / "registry",
                             memory_limit=None if args.go_defaults else "256MiB").start()
    try:
        total = args.repos * args.tags
        if filled:
            print(f"reusing the registry filled earlier in {work}")
        else:
            with RegistryClient(registry.url) as client:
                seconds = fill(client, args.repos, args.tags, args.push_workers)
            print(f"filled {total} tags in {args.repos} repositories in {seconds:.1f}s "
                  f"({total / seconds:.0f} images/s, {args.push_workers} push workers)")

        startup = cli_startup()
        print(f"CLI start-up alone (tagwarden --help): {startup:.1f}s")
        assert registry._proc is not None
        timed: dict[str, float] = {}
        for label, extra in (("tagwarden scan", ()), ("tagwarden scan --no-configs",
                                                      ("--no-configs",))):
            db = work / "scan.db"
            db.unlink(missing_ok=True)
            server_before, client_before = process_cpu(registry._proc.pid), children_cpu()
            load_before = os.getloadavg()[0]
            wall, summary = tagwarden_scan(registry.url, db, args.concurrency, *extra)
            server = process_cpu(registry._proc.pid) - server_before
            client_cpu = children_cpu() - client_before
            timed[label] = wall
            print(f"{label}: {wall:.1f}s wall; {summary}")
            # CPU seconds do not grow with other load on the machine; wall time does.
            print(f"  CPU: tagwarden {client_cpu:.1f}s (start-up included), "
                  f"docker-registry {server:.1f}s, concurrency {args.concurrency}; "
                  f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
        if args.skip_skopeo:
            return

        list_s, per_tag, inspected = skopeo_scan(registry.host, args.repos, args.tags,
                                                 args.sample)
        skopeo_total = list_s + per_tag * total
        how = ("measured" if inspected == total
               else f"extrapolated from {inspected} random tags")
        print(f"skopeo sequential scan: {skopeo_total:.1f}s ({how}; list-tags {list_s:.1f}s, "
              f"inspect {per_tag * 1000:.0f} ms/tag)")
        for label, seconds in timed.items():
            print(f"ratio skopeo / {label}: {skopeo_total / seconds:.1f}x")
    finally:
        registry.stop()
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
