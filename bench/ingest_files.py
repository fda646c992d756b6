"""File ingest: ``tagwarden ingest distribution`` events/s into SQLite, and its peak memory.

Generates seeded Distribution notification files (JSON lines of envelopes, gzip), then runs the
real command as a subprocess on each and reports events/s and the child's peak RSS. Memory
must not grow with the file: two sizes are measured. Targets (issue 2): >= 50,000 events/s,
peak < 300 MB whatever the file size.

    .venv/bin/python bench/ingest_files.py                 # 200k and 1M events
    .venv/bin/python bench/ingest_files.py --events 100000 --events 400000 --keep
    .venv/bin/python bench/ingest_files.py --breakdown 100000   # CPU s per stage, in-process
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.oci.image.index.v1+json")
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# (user agent, weight): mostly kubelet/containerd and docker, some scanners and mirrors.
AGENTS = (
    ("containerd/v1.7.11", 40),
    ("docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.5.0 os/linux arch/amd64 "
     "UpstreamClient(Docker-Client/24.0.7 \\(linux\\))", 20),
    ("cri-o/1.28.1 go/go1.20.10 os/linux arch/amd64", 8),
    ("buildkit/v0.12.4", 5),
    ("trivy/0.48.1", 10),
    ("skopeo/1.14.0", 4),
    ("regclient/regbot (v0.5.6)", 3),
    ("Go-http-client/1.1", 5),
    ("tagwarden/0.1.0", 5),
)


def _digest(*parts: object) -> str:
    return "sha256:" + hashlib.sha256(repr(parts).encode()).hexdigest()


def generate(path: Path, events: int, *, seed: int = 7, repositories: int = 300) -> int:
    """Write ``events`` events (1-10 per envelope, one envelope per line). Returns lines."""
    rng = random.Random(seed)
    agents = [a for a, _ in AGENTS]
    weights = [w for _, w in AGENTS]
    repos = [f"team{r % 17}/service-{r}" for r in range(repositories)]
    # Popularity: a few repositories take most pulls (1/rank), and within a repository the
    # newest versions do; versions advance as the file's time goes by.
    cum, total = [], 0.0
    for rank in range(repositories):
        total += 1.0 / (rank + 1)
        cum.append(total)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = 1.0 / 50  # 50 events/s on average: a file is a chronological registry log
    written = lines = 0
    with gzip.open(path, "wb", compresslevel=3) as out:
        while written < events:
            n = min(rng.randint(1, 10), events - written)
            batch = []
            for _ in range(n):
                written += 1
                repo = rng.choices(repos, cum_weights=cum)[0]
                newest = 1 + (written * 40) // events
                version = max(1, newest - int(rng.expovariate(0.7)))
                t = start + timedelta(seconds=written * step + rng.random())
                stamp = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rng.randint(0, 999_999_999):09d}Z"
                roll = rng.random()
                if roll < 0.03:
                    action, media, method = "push", rng.choice(MANIFEST_TYPES), "PUT"
                    version = newest
                elif roll < 0.25:
                    action, media, method = "pull", LAYER_TYPE, "GET"  # blob fetches
                else:
                    action, media = "pull", MANIFEST_TYPES[version % 3]
                    method = "HEAD" if rng.random() < 0.4 else "GET"
                digest = (_digest(repo, version, "layer", rng.randint(0, 4))
                          if media == LAYER_TYPE else _digest(repo, version))
                kind = "blobs" if media == LAYER_TYPE else "manifests"
                target = {"mediaType": media, "digest": digest, "size": rng.randint(500, 9000),
                          "length": 0, "repository": repo,
                          "url": f"http://registry.example.com:5000/v2/{repo}/{kind}/{digest}"}
                target["length"] = target["size"]
                if media != LAYER_TYPE and (action == "push" or rng.random() < 0.5):
                    target["tag"] = f"1.{version}.0"
                batch.append({
                    "id": f"{seed}-{written}-{rng.getrandbits(48):012x}",
                    "timestamp": stamp, "action": action, "target": target,
                    "request": {"id": f"r{written}", "addr": f"10.0.{rng.randint(0, 255)}.7:4000",
                                "host": "registry.example.com:5000", "method": method,
                                "useragent": rng.choices(agents, weights)[0]},
                    "actor": {}, "source": {"addr": "reg-0:5000", "instanceID": "bench"},
                })
            out.write(orjson.dumps({"events": batch}) + b"\n")
            lines += 1
    return lines


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the command forks a parsing process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _memory(pids: list[int]) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over ``pids``: RSS counts the pages a forked child
    shares with its parent twice, PSS splits them between the two (the memory really used)."""
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) * 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
        except OSError:
            pass
    return rss, pss


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` so far, 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(path: Path, db: Path, *extra: str
            ) -> tuple[float, float, int, tuple[int, int], float, str]:
    """Run the real command: (wall s, CPU s of it and its parsing process, the largest
    process's peak RSS (``wait4``), the peak of the processes' summed (RSS, PSS) sampled
    every 50 ms, the parsing process's CPU s (its last sample), its summary)."""
    cmd = [sys.executable, "-m", "recommender.cli", "--db", f"sqlite:///{db}", "ingest",
           "distribution", str(path), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peaks = [0, 0]
    helpers: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            pids = _tree(proc.pid)
            rss, pss = _memory(pids)
            peaks[0], peaks[1] = max(peaks[0], rss), max(peaks[1], pss)
            for pid in pids[1:]:
                helpers[pid] = max(helpers.get(pid, 0.0), _cpu(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    out = proc.stdout.read().decode().strip() if proc.stdout else ""
    err = proc.stderr.read().decode().strip() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ingest failed: {out} {err}")
    # wait4's usage covers the command and the parsing process it waited for (RUSAGE_BOTH).
    return (elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024,
            (peaks[0], peaks[1]), sum(helpers.values()), out)


def startup(db: Path) -> tuple[float, float]:
    """The command's fixed cost (imports, opening the store), wall and CPU seconds:
    ``tagwarden migrate`` on the store the ingest will use."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "recommender.cli", "--db", f"sqlite:///{db}",
                             "migrate"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def breakdown(events: int, work: Path, seed: int) -> None:
    """CPU seconds of each stage, in this process, as the command splits them: the parsing
    process reads (gunzip), decodes and parses (+ classify) and prepares (writer.prepare: rows,
    manifests and rollups planned); the writing process writes (write_prepared), timed by
    wrapping the writer's functions (nothing else changes)."""
    from collections import defaultdict

    from recommender.collector import writer as writer_module
    from recommender.collector.distribution import parse_envelope_line
    from recommender.collector.files import JsonLines
    from recommender.collector.writer import EventWriter
    from recommender.store import open_store
    from recommender.usage import Classifier

    spent: defaultdict[str, float] = defaultdict(float)

    def timed(owner: object, name: str) -> None:
        function = getattr(owner, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - start

        setattr(owner, name, wrapper)

    for name in ("write_prepared", "_apply_tag_history", "_resolve_tags"):
        timed(EventWriter, name)
    for name in ("prepare", "_write_manifests", "_write_rollups"):
        timed(writer_module, name)
    path = work / f"distribution-{events}.jsonl.gz"
    generate(path, events, seed=seed)
    store = open_store(f"sqlite:///{work / 'breakdown.db'}")
    classifier = Classifier()
    start = time.process_time()
    lines = [line for _, line in JsonLines(path, raw=True)]
    read = time.process_time() - start
    start = time.process_time()
    parsed = [e for line in lines for e in parse_envelope_line(line, classifier)]
    parse = time.process_time() - start
    writer = EventWriter(store, bulk=True)
    now = datetime.now(UTC)
    for i in range(0, len(parsed), 5000):
        writer.write(parsed[i:i + 5000], now=now)  # SQLite: prepare, then write_prepared
    scale = 100_000 / events
    steps = ("_write_rollups", "_write_manifests", "_apply_tag_history", "_resolve_tags")
    rest = spent["write_prepared"] - sum(spent[name] for name in steps)
    print(f"CPU s per 100,000 events (load average {os.getloadavg()[0]:.1f}): parsing "
          f"process: read {read * scale:.2f}, decode + parse {parse * scale:.2f}, prepare "
          f"{spent['prepare'] * scale:.2f}; writing process: write "
          f"{spent['write_prepared'] * scale:.2f} = rollups "
          f"{spent['_write_rollups'] * scale:.2f} + manifests "
          f"{spent['_write_manifests'] * scale:.2f} + tag history "
          f"{(spent['_apply_tag_history'] + spent['_resolve_tags']) * scale:.2f} + events "
          f"insert, commit and the rest {rest * scale:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, action="append",
                        help="events per file (repeat for several sizes)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--batch-size", type=int, help="the command's --batch-size")
    parser.add_argument("--breakdown", type=int, metavar="N",
                        help="instead: CPU time per stage for N events, in-process")
    args = parser.parse_args()
    if args.breakdown:
        with tempfile.TemporaryDirectory(prefix="tagwarden-bench-") as tmp:
            breakdown(args.breakdown, Path(tmp), args.seed)
        return
    sizes = args.events or [200_000, 1_000_000]
    with tempfile.TemporaryDirectory(prefix="tagwarden-bench-") as tmp:
        work = Path(tmp)
        print(f"load average before: {os.getloadavg()[0]:.1f} (2 cores: above 2 means shared)")
        print(f"{'events':>10} {'file MB':>8} {'wall s':>7} {'CPU s':>6} {'startup':>8} "
              f"{'events/s':>9} {'per CPU-s':>9} {'peak RSS MB':>11} {'sum RSS':>7} "
              f"{'sum PSS':>7}")
        for size in sizes:
            path = work / f"distribution-{size}.jsonl.gz"
            generate(path, size, seed=args.seed)
            db = work / f"store-{size}.db"
            fixed_wall, fixed_cpu = startup(db)  # also creates the schema, outside the timing
            elapsed, cpu, peak, (sum_rss, sum_pss), parse_cpu, summary = measure(
                path, db, *(["--batch-size", str(args.batch_size)] if args.batch_size else []))
            # events/s over the ingest itself: the wall time minus the fixed start-up cost;
            # per CPU-s: what a machine with a free core for us would do (the overlap of
            # parsing and writing on a second core aside).
            rate = size / max(elapsed - fixed_wall, 1e-9)
            per_cpu = size / max(cpu - fixed_cpu, 1e-9)
            print(f"{size:>10} {path.stat().st_size / 1e6:>8.1f} {elapsed:>7.1f} {cpu:>6.1f} "
                  f"{fixed_wall:>7.1f}s {rate:>9,.0f} {per_cpu:>9,.0f} {peak / 2**20:>11.0f}"
                  f" {sum_rss / 2**20:>7.0f} {sum_pss / 2**20:>7.0f}   ({summary}; load average"
                  f" after: {os.getloadavg()[0]:.1f}; CPU s of the writing process "
                  f"{cpu - parse_cpu:.1f} (start-up {fixed_cpu:.1f} of it), of the parsing "
                  f"process {parse_cpu:.1f})", flush=True)
            if args.keep:
                keep = Path("data/generated/bench")
                keep.mkdir(parents=True, exist_ok=True)
                path.replace(keep / path.name)


if __name__ == "__main__":
    main()
