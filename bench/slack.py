"""Slack benchmark: acknowledgement latency under 50 concurrent signed clicks (target p99 under
300 ms), and a digest of 10,000 suggestions within Slack's limits.

Run: ``.venv/bin/python bench/slack.py [--clicks 50] [--rounds 5] [--suggestions 10000]``.

Part 1 (timed per request): ``tagwarden serve`` in its own process (collector +
``/slack/events``, the real Bolt app; scheduler off), a fresh SQLite store, the fake Slack Web
API from ``tests/support`` in this process. Each round sends ``--clicks`` Approve clicks at
once, each on its own pending batch, signed like Slack signs them; the time is from sending
the request to the HTTP answer (Slack's 3-second acknowledgement). The follow-up work
(authorization, the atomic approval, ``chat.update``) runs after the answer and is measured
separately: time until every message was updated.

Part 2: ``--suggestions`` suggestions recorded as batches (one per repository and kind), the
weekly digest built from the store (timed) and posted to the fake (paced at 0 s here; at
Slack's one message per second the thread takes as many seconds as pages). Reported: messages,
most blocks in a message, longest section text, against the limits.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from slack_sdk import WebClient  # noqa: E402

from bot import blocks  # noqa: E402
from bot.digest import post_digest  # noqa: E402
from recommender import decisions  # noqa: E402
from recommender.config import Config  # noqa: E402
from recommender.store import Store, open_store  # noqa: E402
from tests.bot.helpers import (  # noqa: E402
    TOKEN,
    Suggestion,
    click_payload,
    digest,
    form,
    make_config,
    sign,
)
from tests.support.fake_slack import FakeSlack  # noqa: E402

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KINDS = ("build", "commit", "branch", "pr", "semver", "test", "date")


def _batches(store: Store, config: Config, n: int, start: int) -> list[str]:
    found = decisions.record_batches(store, [
        Suggestion(f"payments/click-{start + i}", digest(start + i)) for i in range(n)
    ], now=NOW, config=config)
    for b in found:
        decisions.set_posted(store, batch_id=b.id, channel="C0PAYMENTS", ts=f"17.{b.id}",
                             now=NOW)
    return [b.id for b in found]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(config_path: Path, db: str, port: int) -> subprocess.Popen[bytes]:
    """`tagwarden serve` in its own process, as in production (clients are elsewhere)."""
    proc = subprocess.Popen([sys.executable, "-m", "recommender.cli", "--config",
                             str(config_path), "--db", db, "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"serve exited: {err}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("serve did not become healthy in 120 s")


def bench_acks(clicks: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as fake:
        db = f"sqlite:///{tmp}/bench.db"
        config = make_config(Path(tmp), fake.api_url, store_url=db,
                             extra="[scheduler]\nenabled = false\n")
        store = open_store(db)
        port = _free_port()
        server = _serve(Path(tmp) / "tagwarden.toml", db, port)
        url = f"http://127.0.0.1:{port}/slack/events"
        latencies: list[float] = []
        follow_up: list[float] = []
        try:
            with httpx.Client(limits=httpx.Limits(max_connections=clicks),
                              timeout=30) as http, ThreadPoolExecutor(clicks) as pool:
                warm = "ssl_check=1&token=warm-up"
                http.post(url, content=warm, headers=sign(warm))  # warm up: pools, threads
                for r in range(rounds):
                    ids = _batches(store, config, clicks, start=r * clicks + 1)
                    bodies = [form(click_payload("tw_approve", i,
                                                 response_url=fake.response_url()))
                              for i in ids]
                    signed = [(b, sign(b)) for b in bodies]
                    updates_before = len(fake.calls("chat.update"))
                    gate = threading.Barrier(clicks)

                    def one(item: tuple[str, dict[str, str]],
                            gate: threading.Barrier = gate) -> float:
                        gate.wait()  # all clicks leave together
                        started = time.perf_counter()
                        resp = http.post(url, content=item[0], headers=item[1])
                        took = time.perf_counter() - started
                        assert resp.status_code == 200, resp.text
                        return took

                    began = time.perf_counter()
                    latencies += list(pool.map(one, signed))
                    fake.wait_for("chat.update", updates_before + clicks, timeout=120)
                    follow_up.append(time.perf_counter() - began)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            store.dispose()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {"requests": len(latencies), "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": p99 * 1000, "max_ms": latencies[-1] * 1000,
            "all_messages_updated_s": max(follow_up)}


def bench_digest(suggestions: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as fake:
        config = make_config(Path(tmp), fake.api_url)
        store = open_store(f"sqlite:///{tmp}/bench.db")
        try:
            repos = max(1, suggestions // 20)
            items = [Suggestion(f"payments/svc-{i % repos}", digest(i), [f"t-{i}"],
                                kind=KINDS[i % len(KINDS)], reclaimable_bytes=50_000_000 + i)
                     for i in range(suggestions)]
            started = time.perf_counter()
            recorded = decisions.record_batches(store, items, now=NOW, config=config)
            record_s = time.perf_counter() - started
            started = time.perf_counter()
            report = post_digest(store, config, team="payments", now=NOW,
                                 client=WebClient(token=TOKEN, base_url=fake.api_url))
            digest_s = time.perf_counter() - started
            posts = fake.calls("chat.postMessage")
            largest = max(recorded, key=lambda b: len(b.items))
            batch_msg = blocks.batch_message(blocks.BatchView(
                largest.id, largest.repository, largest.kind,
                tuple(blocks.ItemView(str(i.id), i.repository, i.digest, i.tags,
                                      i.reclaimable_bytes, i.reasons) for i in largest.items),
                largest.reclaimable_bytes))
        finally:
            store.dispose()
    sections = [len(b["text"]["text"]) for p in posts for b in p.blocks
                if b.get("type") == "section" and "text" in b]
    return {"suggestions": suggestions, "batches": len(recorded), "record_s": record_s,
            "digest_build_and_post_s": digest_s, "messages": len(posts),
            "thread_pages": report.pages_posted,
            "max_blocks_per_message": max(len(p.blocks) for p in posts),
            "max_section_chars": max(sections),
            "max_message_bytes": max(len(json.dumps(p.blocks)) for p in posts),
            "largest_batch_items": len(largest.items),
            "largest_batch_message_blocks": len(batch_msg["blocks"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--suggestions", type=int, default=10_000)
    args = parser.parse_args()
    acks = bench_acks(args.clicks, args.rounds)
    print(f"acknowledgements: {acks['requests']} signed clicks, {args.clicks} at once: "
          f"p50 {acks['p50_ms']:.0f} ms, p99 {acks['p99_ms']:.0f} ms (target < 300 ms), "
          f"max {acks['max_ms']:.0f} ms; every message updated within "
          f"{acks['all_messages_updated_s']:.1f} s of a round's start")
    d = bench_digest(args.suggestions)
    print(f"digest: {d['suggestions']} suggestions in {d['batches']} batches (recorded in "
          f"{d['record_s']:.1f} s); built and posted in {d['digest_build_and_post_s']:.2f} s: "
          f"{d['messages']} messages (summary + {d['thread_pages']} thread pages), at most "
          f"{d['max_blocks_per_message']} blocks (limit {blocks.MAX_BLOCKS}), longest section "
          f"{d['max_section_chars']} chars (limit {blocks.MAX_SECTION_CHARS}); largest batch "
          f"{d['largest_batch_items']} items -> {d['largest_batch_message_blocks']} blocks")
    ok = (acks["p99_ms"] < 300 and d["max_blocks_per_message"] <= blocks.MAX_BLOCKS
          and d["max_section_chars"] <= blocks.MAX_SECTION_CHARS)
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
