"""Client CPU per registry request: the ways the registry client can send a manifest GET.

Against the registry that ``bench/scan.py --dir DIR`` filled (its repositories
``bench/repoNNN``, tags ``tNNN``), each variant fetches the same N manifests by tag and prints
CPU milliseconds per request of this process (``time.process_time``) and of docker-registry
(``/proc``), and wall milliseconds. Variants run in alternating rounds, so a change in the
machine's load hits them all alike.

- ``sync/httpx``: ``RegistryClient`` as it is built (httpx's own transport: httpcore + h11),
  sequential.
- ``bare/http.client``: one ``http.client.HTTPConnection``, no client at all: the floor.
- ``async/aiohttp xK``: ``AsyncRegistryClient`` as the scan uses it (``httpx.AsyncClient`` on
  ``AiohttpTransport``), K requests in flight.
- ``async/httpx xK``: ``AsyncRegistryClient`` on httpx's own asyncio transport (what a
  registry behind a proxy gets), K requests in flight.
- ``layers/in-memory``: ``AsyncRegistryClient`` over an in-memory transport that replays one
  real manifest response (status, headers, body) of the registry: what the client's own layers
  cost per request (request, auth flow, redirects check, response, digest, JSON), no socket.

Usage: ``.venv/bin/python bench/client_cpu.py --dir /tmp/scanbench [--requests 1500]
[--rounds 2] [--in-flight 8] [--only async/aiohttp,bare]`` (``--only``: the variants whose
names start with one of these, e.g. only the scan's path and the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from recommender.registry import mediatypes as mt
from recommender.registry.aio import AsyncRegistryClient
from recommender.registry.local import LocalRegistry
from recommender.registry.sync import RegistryClient


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="bench/scan.py's --dir")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--only", default="", help="comma-separated name prefixes")
    args = parser.parse_args()
    if not (args.dir / "registry" / "storage" / "docker").exists():
        raise SystemExit(f"no filled registry in {args.dir}: run bench/scan.py --dir first")
    registry = LocalRegistry(args.dir / "registry").start()
    assert registry._proc is not None
    pid = registry._proc.pid
    jobs = [(f"bench/repo{r:03d}", f"t{t:03d}") for r in range(100) for t in range(100)]
    jobs = jobs[: args.requests]
    k = args.in_flight
    accept = ", ".join(mt.MANIFEST_ACCEPT)

    def sync(transport: httpx.BaseTransport | None) -> Callable[[], None]:
        def run() -> None:
            with RegistryClient(registry.url, transport=transport) as client:
                for repo, tag in jobs:
                    client.get_manifest(repo, tag)
        return run

    def bare() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", registry.port)
        for repo, tag in jobs:
            conn.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
            conn.getresponse().read()
        conn.close()

    def concurrent(transport: httpx.AsyncBaseTransport | None) -> Callable[[], None]:
        async def go() -> None:
            async with AsyncRegistryClient(registry.url, transport=transport,
                                           max_connections=k) as client:
                gate = asyncio.Semaphore(k)

                async def one(repo: str, tag: str) -> None:
                    async with gate:
                        await client.get_manifest(repo, tag)

                await asyncio.gather(*(one(*job) for job in jobs))
        return lambda: asyncio.run(go())

    # One real answer of the registry, replayed by layers/in-memory (the registry is stopped
    # if it cannot be had: the rounds' ``finally`` below is not reached yet).
    try:
        answer = httpx.get(f"{registry.url}/v2/{jobs[0][0]}/manifests/{jobs[0][1]}",
                           headers={"Accept": accept}).raise_for_status()
    except BaseException:
        registry.stop()
        raise
    replay = (answer.status_code, answer.headers.raw, answer.content)

    class Replay(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            status, raw, body = replay
            return httpx.Response(status, headers=list(raw), stream=httpx.ByteStream(body))

    def layers() -> None:
        async def go() -> None:
            client = AsyncRegistryClient(registry.url, transport=Replay())
            repo, tag = jobs[0]
            for _ in jobs:
                await client.get_manifest(repo, tag)
        asyncio.run(go())

    variants: dict[str, Callable[[], Callable[[], None]]] = {
        "sync/httpx": lambda: sync(None),
        "bare/http.client": lambda: bare,
        f"async/aiohttp x{k}": lambda: concurrent(None),
        f"async/httpx x{k}": lambda: concurrent(httpx.AsyncHTTPTransport()),
        "layers/in-memory": lambda: layers,
    }
    prefixes = tuple(p for p in args.only.split(",") if p)
    if prefixes:
        variants = {k: v for k, v in variants.items() if k.startswith(prefixes)}
        if not variants:
            raise SystemExit(f"--only {args.only!r} matches no variant")
    n = len(jobs)
    print(f"{n} manifest GETs per variant and round; load average {os.getloadavg()[0]:.1f}")
    try:
        for round_no in range(args.rounds):
            for name, make in variants.items():
                run = make()
                cpu, server, wall = time.process_time(), process_cpu(pid), time.perf_counter()
                run()
                wall = time.perf_counter() - wall
                cpu = time.process_time() - cpu
                server = process_cpu(pid) - server
                print(f"round {round_no + 1} {name:20s} client {cpu / n * 1000:.3f} ms/req, "
                      f"registry {server / n * 1000:.3f} ms/req, wall {wall / n * 1000:.3f} "
                      f"ms/req; load average {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        registry.stop()


if __name__ == "__main__":
    main()
