"""HTTP ingest benchmark: ``tagwarden serve`` on SQLite, driven by concurrent senders.

Run: ``.venv/bin/python bench/ingest_http.py [--senders 32] [--seconds 10] [--rate 2000]
[--workers 1] [--writer process|thread]``.

It starts ``tagwarden serve`` as a subprocess (a fresh SQLite store in a temp dir) and drives it
from this process with asyncio and raw HTTP/1.1 over keep-alive connections (the cheapest client
we can write: it competes with the server for the same cores). Every request is a Distribution
envelope of 10 pull events with unique ids, so every event is really inserted.

1. Throughput: ``--senders`` connections post back to back for ``--seconds``; events/s counts
   only 200 answers, and the store is checked at the end to hold every accepted event.
2. Latency at a fixed offered load (``--rate`` events/s): requests are sent on a schedule (open
   loop) and timed from their scheduled send time, so a stalled server cannot hide its queue.

Server CPU counts every process of the server (uvicorn workers, writer processes) and is
also printed per process and, within each, per thread: in one process the event loop and a
writer thread share one GIL, so their sum, not the machine's cores, bounds its throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

TOKEN = "bench-token"
EVENTS_PER_REQUEST = 10
DIGEST = "sha256:" + "ab" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Envelopes:
    """Distribution envelopes with unique event ids, formatted from a byte template (the sender
    shares the cores with the server: it must cost as little as possible)."""

    # One pull event as orjson writes it; the fields that vary are %-formatted.
    EVENT = (b'{"id":"%s-%d","timestamp":"2026-01-%02dT%02d:%02d:00.123456789Z","action":"pull",'
             b'"target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"'
             + DIGEST.encode() + b'","size":1234,"repository":"team%d/app%d","tag":"v%d"},'
             b'"request":{"method":"GET","useragent":"%s","addr":"10.1.2.3:4567",'
             b'"host":"registry.example"},"actor":{},"source":{"addr":"registry.example:5000"}}')

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.encode()
        self.n = 0
        self.agents = [b"containerd/1.7.2", b"docker/24.0.7 go/go1.20", b"trivy/0.50.1"]

    def next(self) -> bytes:
        events = []
        for i in range(self.n + 1, self.n + EVENTS_PER_REQUEST + 1):
            events.append(self.EVENT % (self.prefix, i, 1 + i % 28, i % 24, i % 60, i % 20,
                                        i % 50, i % 30, self.agents[i % 3]))
        self.n += EVENTS_PER_REQUEST
        return b'{"events":[' + b",".join(events) + b"]}"


def request_bytes(body: bytes) -> bytes:
    head = (f"POST /v1/events/distribution HTTP/1.1\r\nHost: bench\r\n"
            f"Authorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/vnd.docker.distribution.events.v2+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    payload: bytes) -> int:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def throughput(port: int, senders: int, seconds: float, phase: str
                     ) -> tuple[int, int, float]:
    stop_at = time.perf_counter() + seconds
    ok = 0
    failed = 0

    async def sender(k: int) -> None:
        nonlocal ok, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        gen = Envelopes(f"{phase}{k}")
        while time.perf_counter() < stop_at:
            if await roundtrip(reader, writer, request_bytes(gen.next())) == 200:
                ok += 1
            else:
                failed += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(sender(k) for k in range(senders)))
    return ok, failed, time.perf_counter() - started


async def fixed_rate(port: int, rate: float, seconds: float, connections: int) -> list[float]:
    """Open loop: request j is due at start + j / req_rate on connection j % connections."""
    req_rate = rate / EVENTS_PER_REQUEST
    total = int(req_rate * seconds)
    latencies: list[float] = []
    start = time.perf_counter() + 0.2

    async def conn(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        gen = Envelopes(f"r{k}")
        for j in range(k, total, connections):
            due = start + j / req_rate
            payload = request_bytes(gen.next())
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status = await roundtrip(reader, writer, payload)
            if status == 200:
                latencies.append(time.perf_counter() - due)
        writer.close()

    await asyncio.gather(*(conn(k) for k in range(connections)))
    return latencies


def cpu_by_thread(procs: list[psutil.Process]) -> dict[tuple[int, int], float]:
    """User+system CPU seconds of every thread of ``procs``, by (pid, thread id)."""
    out: dict[tuple[int, int], float] = {}
    for p in procs:
        try:
            for t in p.threads():
                out[(p.pid, t.id)] = t.user_time + t.system_time
        except psutil.NoSuchProcess:
            pass
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s for the latency run")
    parser.add_argument("--connections", type=int, default=8, help="for the latency run")
    parser.add_argument("--workers", type=int, default=1, help="tagwarden serve --workers")
    parser.add_argument("--writer", choices=["process", "thread"], default="process",
                        help="tagwarden serve --writer")
    args = parser.parse_args()

    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        pass

    tmp = Path(tempfile.mkdtemp(prefix="tagwarden-bench-"))
    db = tmp / "store.db"
    (tmp / "config.toml").write_text(f'[collector]\ntoken = "{TOKEN}"\n')
    port = free_port()
    exe = shutil.which("tagwarden", path=str(Path(sys.executable).parent)) or "tagwarden"
    server = subprocess.Popen(
        [exe, "--config", str(tmp / "config.toml"), "--db", f"sqlite:///{db}", "serve",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
         "--writer", args.writer],
        env={k: v for k, v in os.environ.items() if not k.startswith("TAGWARDEN_")},
    )
    try:
        deadline = time.monotonic() + 120  # workers import slowly on a busy machine
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print("server did not start", file=sys.stderr)
                return 1
            time.sleep(0.1)

        warm = asyncio.run(throughput(port, args.senders, 2.0, "w"))[0]  # warm-up (caches)
        procs = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        before = cpu_by_thread(procs)
        ok, failed, elapsed = asyncio.run(throughput(port, args.senders, args.seconds, "t"))
        used = {k: v - before.get(k, 0.0) for k, v in cpu_by_thread(procs).items()}
        server_cpu = sum(used.values())
        rate = ok * EVENTS_PER_REQUEST / elapsed
        lat = asyncio.run(fixed_rate(port, args.rate, args.seconds, args.connections))
        with sqlite3.connect(db) as conn:
            stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)

    expected = int(args.rate / EVENTS_PER_REQUEST * args.seconds)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    print(f"server: tagwarden serve --workers {args.workers} --writer {args.writer}")
    print(f"throughput: {args.senders} senders x {args.seconds:.0f}s: {ok} requests ok, "
          f"{failed} failed, {rate:,.0f} events/s ({ok / elapsed:,.0f} requests/s); server "
          f"used {server_cpu / elapsed:.2f} cores, {ok * EVENTS_PER_REQUEST / server_cpu:,.0f} "
          f"events per server CPU-second")
    per_process: dict[int, float] = {}
    for (pid, _), cpu in used.items():
        per_process[pid] = per_process.get(pid, 0.0) + cpu
    for pid, cpu in sorted(per_process.items(), key=lambda kv: -kv[1]):
        if cpu >= 0.01 * server_cpu:
            threads = sorted(((c, tid) for (p, tid), c in used.items() if p == pid), reverse=True)
            print(f"  process {pid}: {cpu / elapsed:.2f} cores; threads "
                  + ", ".join(f"{c / elapsed:.2f}" for c, _ in threads if c >= 0.01 * server_cpu))
    print(f"latency at {args.rate:,.0f} events/s offered ({args.connections} connections): "
          f"{len(lat)}/{expected} ok, p50 {statistics.median(lat) * 1000:.1f} ms, "
          f"p99 {pct(lat, 0.99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms")
    accepted = (warm + ok + len(lat)) * EVENTS_PER_REQUEST
    print(f"store holds {stored} events; accepted {accepted}: "
          f"{'all stored' if stored == accepted else 'MISMATCH'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
