"""Rendering events as CNCF Distribution notification envelopes, delivered as registries do.

Each registry replica has its own notification queue: an envelope carries up to 10 events of
one replica, in the order that replica served them; envelopes of different replicas interleave;
a retry after a lost acknowledgement delivers an envelope twice; a backoff delivers one late
(out of order). Timestamps are written the way Go's ``time.RFC3339Nano`` writes them (trailing
zeros trimmed) in each replica's local offset.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .world import ACTION_NAMES, DELETE, METHOD_NAMES, MOUNT, SECOND, TAGDEL, World

__all__ = ["INSTANCES", "format_time", "write_distribution"]

# (source addr, instanceID, UTC offset in minutes) of the registry's replicas
INSTANCES = (
    ("registry-0.registry.svc:5000", "6b3f8a0e-1d2c-4c9e-9f7a-2e51b0c4d3a1", 0),
    ("registry-1.registry.svc:5000", "c0a81f44-7e52-4b0d-8a9c-5d6e7f801234", -480),
    ("registry-2.registry.svc:5000", "91d2e3f4-a5b6-4c7d-8e9f-0a1b2c3d4e5f", 330),
)

_day_cache: dict[int, str] = {}


def format_time(t_ns: int, offset_min: int) -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed, in the given UTC offset."""
    local = t_ns + offset_min * 60 * SECOND
    secs, frac = divmod(local, SECOND)
    days, sod = divmod(secs, 86400)
    day = _day_cache.get(days)
    if day is None:
        day = _day_cache[days] = datetime.fromtimestamp(days * 86400, UTC).strftime("%Y-%m-%d")
    hh, rem = divmod(sod, 3600)
    mm, ss = divmod(rem, 60)
    text = f"{day}T{hh:02d}:{mm:02d}:{ss:02d}"
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    if offset_min == 0:
        return text + "Z"
    sign = "+" if offset_min > 0 else "-"
    h, m = divmod(abs(offset_min), 60)
    return f"{text}{sign}{h:02d}:{m:02d}"


def _uuid(hi: int, lo: int) -> str:
    s = f"{hi:016x}{lo:016x}"
    return f"{s[:8]}-{s[8:12]}-4{s[13:16]}-{'89ab'[lo >> 62]}{s[17:20]}-{s[20:]}"


def _renderer(w: World, cols: dict[str, np.ndarray], rng: np.random.Generator
              ) -> Callable[[int, int], dict[str, Any]]:
    n = len(cols["t"])
    ids = rng.integers(0, 2**63, (n, 4), dtype=np.int64).astype(np.uint64) * 2 + 1
    ports = rng.integers(32768, 61000, n)
    host = w.spec.registry
    repos = w.repos
    mans = w.manifests
    blobs = w.blobs
    tags = w.tags
    clients = [(c.user_agent, {"name": c.actor} if c.actor else {}, c.addr)
               for c in w.clients.items]
    t_col, a_col, m_col = cols["t"].tolist(), cols["action"].tolist(), cols["man"].tolist()
    g_col, me_col = cols["tag"].tolist(), cols["method"].tolist()
    c_col, b_col = cols["client"].tolist(), cols["blob"].tolist()

    def render(j: int, instance: int) -> dict[str, Any]:
        action = a_col[j]
        m = mans[m_col[j]]
        repo = repos[m.repo]
        if action == DELETE:
            target: dict[str, Any] = {"digest": m.digest, "repository": repo}
        elif action == TAGDEL:
            target = {"repository": repo, "tag": tags[g_col[j]]}
        elif b_col[j] >= 0:
            b = blobs[b_col[j]]
            target = {"mediaType": b.media_type, "size": b.size, "digest": b.digest,
                      "length": b.size, "repository": repo}
            if action == MOUNT:
                target["fromRepository"] = repos[b.repo]
            target["url"] = f"https://{host}/v2/{repo}/blobs/{b.digest}"
        else:
            target = {"mediaType": m.media_type, "size": m.size, "digest": m.digest,
                      "length": m.size, "repository": repo,
                      "url": f"https://{host}/v2/{repo}/manifests/{m.digest}"}
            if g_col[j] >= 0:
                target["tag"] = tags[g_col[j]]
        ua, actor, addr = clients[c_col[j]]
        a, b, c, d = ids[j].tolist()
        src_addr, src_id, offset = INSTANCES[instance]
        return {
            "id": _uuid(a, b),
            "timestamp": format_time(t_col[j], offset),
            "action": ACTION_NAMES[action],
            "target": target,
            "request": {"id": _uuid(c, d), "addr": f"{addr}:{ports[j]}", "host": host,
                        "method": METHOD_NAMES[me_col[j]], "useragent": ua},
            "actor": actor,
            "source": {"addr": src_addr, "instanceID": src_id},
        }

    return render


def write_distribution(w: World, cols: dict[str, np.ndarray], path: Path,
                       rng: np.random.Generator,
                       progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write ``distribution.jsonl.gz``: one envelope per line. Returns counts."""
    t = cols["t"]
    n = len(t)
    order = np.argsort(t, kind="stable")
    instance = rng.integers(0, len(INSTANCES), n)
    members: list[np.ndarray] = []
    env_start: list[np.ndarray] = []
    env_stop: list[np.ndarray] = []
    env_inst: list[np.ndarray] = []
    offset = 0
    for i in range(len(INSTANCES)):
        idx = order[instance[order] == i]
        if not len(idx):
            continue
        # a replica's queue sends what piled up while it was busy: up to 10 events that came
        # in within a second of each other, else one envelope per event
        capped = np.cumsum(rng.integers(1, 11, len(idx) + 1))
        gaps = np.nonzero(np.diff(t[idx]) > SECOND)[0] + 1
        bounds = np.union1d(capped[capped < len(idx)], gaps)
        starts_i = np.concatenate([[0], bounds]).astype(np.int64)
        stops_i = np.concatenate([bounds, [len(idx)]]).astype(np.int64)
        members.append(idx)
        env_start.append(starts_i + offset)
        env_stop.append(stops_i + offset)
        env_inst.append(np.full(len(starts_i), i))
        offset += len(idx)
    if not members:
        path.write_bytes(gzip.compress(b"", mtime=0))
        return {"events": 0, "envelopes": 0, "duplicate_envelopes": 0, "late_envelopes": 0}
    flat = np.concatenate(members)
    starts, stops, inst = (np.concatenate(env_start), np.concatenate(env_stop),
                           np.concatenate(env_inst))
    last_t = t[flat[stops - 1]]
    deliver = last_t + rng.exponential(0.2 * SECOND, len(starts)).astype(np.int64)
    late = rng.random(len(starts)) < w.spec.reorder_rate
    deliver[late] += rng.integers(5 * SECOND, 120 * SECOND, int(late.sum()))
    dup = np.nonzero(rng.random(len(starts)) < w.spec.duplicate_rate)[0]
    all_env = np.concatenate([np.arange(len(starts)), dup])
    all_deliver = np.concatenate(
        [deliver, deliver[dup] + rng.integers(SECOND, 30 * SECOND, len(dup))])
    sequence = all_env[np.argsort(all_deliver, kind="stable")]
    render = _renderer(w, cols, rng)
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                               compresslevel=3) as out:
        buf: list[bytes] = []
        for k, e in enumerate(sequence.tolist()):
            i = int(inst[e])
            events = [render(j, i) for j in flat[starts[e]:stops[e]].tolist()]
            buf.append(orjson.dumps({"events": events}))
            if len(buf) >= 2000:
                out.write(b"\n".join(buf) + b"\n")
                buf.clear()
                if progress is not None:
                    progress(k)
        if buf:
            out.write(b"\n".join(buf) + b"\n")
    return {"events": n, "envelopes": len(starts), "duplicate_envelopes": len(dup),
            "late_envelopes": int(late.sum())}
