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
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .world import ACTION_NAMES, DELETE, METHOD_NAMES, MOUNT, SECOND, TAGDEL, World

__all__ = ["INSTANCES", "format_time", "write_distribution"]

_BLOCK = 20_000  # envelopes rendered at a time

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


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# byte positions of a UUID's 32 hex digits in its 36-character text
_UUID_POS = np.array([i + (i >= 8) + (i >= 12) + (i >= 16) + (i >= 20) for i in range(32)])


def _uuids(raw: np.ndarray) -> list[str]:
    """Version-4 UUID texts from rows of 16 random bytes (vectorized)."""
    raw = raw.copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = np.empty((len(raw), 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[raw >> 4]
    hexed[:, 1::2] = _HEX[raw & 0x0F]
    text = np.full((len(raw), 36), ord("-"), dtype=np.uint8)
    text[:, _UUID_POS] = hexed
    return text.view("S36").ravel().astype("U36").tolist()


_SUFFIX = {0: "Z"}


def _suffix(off: int) -> str:
    got = _SUFFIX.get(off)
    if got is None:
        h, m = divmod(abs(off), 60)
        got = _SUFFIX[off] = f"{'+' if off > 0 else '-'}{h:02d}:{m:02d}"
    return got


def _times(t_ns: np.ndarray, offset_min: np.ndarray) -> tuple[list[str], list[int]]:
    """RFC 3339 nanosecond texts in each event's replica offset, and how much of each to keep
    (Go trims the fraction's trailing zeros, and the dot when nothing is left)."""
    local = t_ns + offset_min.astype(np.int64) * 60 * SECOND
    texts = np.datetime_as_string(local.astype("datetime64[ns]"), unit="ns").tolist()
    frac = local % SECOND
    keep = np.full(len(local), 29, dtype=np.int64)
    for _ in range(9):  # count trailing zeros of the nanoseconds, digit by digit
        zero = (frac % 10 == 0) & (keep > 20)
        keep -= zero
        frac = np.where(zero, frac // 10, frac)
    keep[keep == 20] = 19  # all zeros: no fraction at all
    return texts, keep.tolist()


class _Renderer:
    """Events as JSON text. The parts that repeat (a manifest's target block, a client's
    request block) are serialized once and cached; ids and times are made per block."""

    def __init__(self, w: World, cols: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        n = len(cols["t"])
        self.w = w
        self.cols = cols
        self.raw_ids = np.frombuffer(rng.bytes(32 * n), dtype=np.uint8).reshape(n, 32)
        self.ports = rng.integers(32768, 61000, n)
        self.offsets = np.array([i[2] for i in INSTANCES])
        self.sources = [orjson.dumps({"addr": a, "instanceID": i}).decode() + "}"
                        for a, i, _ in INSTANCES]
        self.targets: dict[int, str] = {}
        self.requests: dict[int, tuple[str, str]] = {}

    def _target(self, action: int, man: int, tag: int, blob: int) -> str:
        w = self.w
        m = w.manifests[man]
        repo = w.repos[m.repo]
        host = w.spec.registry
        if action == DELETE:
            target: dict[str, Any] = {"digest": m.digest, "repository": repo}
        elif action == TAGDEL:
            target = {"repository": repo, "tag": w.tags[tag]}
        elif blob >= 0:
            b = w.blobs[blob]
            target = {"mediaType": b.media_type, "size": b.size, "digest": b.digest,
                      "length": b.size, "repository": repo}
            if action == MOUNT:
                target["fromRepository"] = w.repos[b.repo]
            target["url"] = f"https://{host}/v2/{repo}/blobs/{b.digest}"
        else:
            target = {"mediaType": m.media_type, "size": m.size, "digest": m.digest,
                      "length": m.size, "repository": repo,
                      "url": f"https://{host}/v2/{repo}/manifests/{m.digest}"}
            if tag >= 0:
                target["tag"] = w.tags[tag]
        return f'"action":"{ACTION_NAMES[action]}","target":{orjson.dumps(target).decode()}'

    def _request(self, client: int, method: int) -> tuple[str, str]:
        c = self.w.clients.items[client]
        rest = orjson.dumps({"host": self.w.spec.registry, "method": METHOD_NAMES[method],
                             "useragent": c.user_agent}).decode()[1:]
        actor = orjson.dumps({"name": c.actor} if c.actor else {}).decode()
        return c.addr + ":", "," + rest + ',"actor":' + actor + ',"source":'

    def block(self, js: np.ndarray, inst: np.ndarray) -> list[str]:
        """The JSON texts of events ``js`` served by replicas ``inst``."""
        cols = self.cols
        ids = _uuids(self.raw_ids[js, :16])
        rids = _uuids(self.raw_ids[js, 16:])
        offsets = self.offsets[inst]
        times, keep = _times(cols["t"][js], offsets)
        suffixes = [_suffix(o) for o in self.offsets.tolist()]
        ports = self.ports[js].tolist()
        action, man, tag = cols["action"][js], cols["man"][js], cols["tag"][js]
        # one integer key per (manifest, tag, action) and per (client, method)
        tkeys = ((man.astype(np.int64) << 28 | (tag.astype(np.int64) + 1)) << 3 | action)
        rkeys = cols["client"][js].astype(np.int64) << 3 | cols["method"][js]
        out = []
        targets, requests, sources = self.targets, self.requests, self.sources
        for k, (tk, rk, b, i) in enumerate(zip(tkeys.tolist(), rkeys.tolist(),
                                               cols["blob"][js].tolist(), inst.tolist(),
                                               strict=True)):
            cached = None if b >= 0 else targets.get(tk)  # blob targets rarely repeat
            if cached is None:
                cached = self._target(tk & 7, tk >> 31, ((tk >> 3) & (2**28 - 1)) - 1, b)
                if b < 0:
                    targets[tk] = cached
            target = cached
            req = requests.get(rk)
            if req is None:
                req = requests[rk] = self._request(rk >> 3, rk & 7)
            # one %-format per event: the fastest way to assemble millions of these texts
            out.append('{"id":"%s","timestamp":"%s%s",%s,"request":{"id":"%s","addr":"%s%d"%s%s'  # noqa: UP031
                       % (ids[k], times[k][:keep[k]], suffixes[i], target, rids[k], req[0],
                          ports[k], req[1], sources[i]))
        return out


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
    render = _Renderer(w, cols, rng)
    # Blocks are compressed as separate gzip members (a valid gzip file: readers inflate
    # members in sequence) on a second thread, while the next block renders: zlib releases
    # the GIL. Each member is deterministic, so the file is too.
    with path.open("wb") as out, ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for b0 in range(0, len(sequence), _BLOCK):
            envs = sequence[b0:b0 + _BLOCK]
            lengths = stops[envs] - starts[envs]
            # positions of every member of these envelopes in ``flat``, in envelope order
            before = np.cumsum(lengths) - lengths
            js = flat[np.arange(lengths.sum()) - np.repeat(before - starts[envs], lengths)]
            texts = render.block(js, np.repeat(inst[envs], lengths))
            lines = []
            pos = 0
            for size in lengths.tolist():
                lines.append('{"events":[' + ",".join(texts[pos:pos + size]) + "]}")
                pos += size
            data = ("\n".join(lines) + "\n").encode()
            if pending is not None:
                out.write(pending.result())
            pending = pool.submit(gzip.compress, data, 1, mtime=0)
            if progress is not None:
                progress(b0 + len(envs))
        if pending is not None:
            out.write(pending.result())
    return {"events": n, "envelopes": len(starts), "duplicate_envelopes": len(dup),
            "late_envelopes": int(late.sum())}
