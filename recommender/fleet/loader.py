"""``load_inventory(store, path)``: a fleet's inventory into the store, as a registry scan would.

Writes ``manifests``, ``blobs``, ``manifest_blobs``, ``manifest_children`` and one ``scans``
row, in one transaction: a malformed line raises :class:`PayloadError` naming it and leaves the
store unchanged. Every manifest of the file is written, including untagged ones (a scan meets
them through telemetry and index children) and deleted ones (with ``deleted_at``). Loading
twice is harmless: manifests are upserted (``first_seen`` is kept when telemetry set it
already), blobs and links are inserted once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, func, insert

from ..errors import PayloadError
from ..reference import is_digest
from ..store import Store, dialect_insert, tables
from ..timeutil import parse_time

__all__ = ["InventoryLoad", "load_inventory", "read_inventory"]

_BATCH = 5000


@dataclass(frozen=True)
class InventoryLoad:
    manifests: int
    blobs: int
    links: int
    children: int
    scan_id: int


def read_inventory(path: Path | str) -> Iterator[dict[str, Any]]:
    """Records of ``inventory.jsonl``, checked; :class:`PayloadError` names a bad line."""
    with Path(path).open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise PayloadError(f"{path}: line {n} is not JSON: {exc}",
                                   where=f"line {n}") from exc
            _check(rec, n)
            yield rec


def _check(rec: Any, n: int) -> None:
    if not isinstance(rec, dict):
        raise PayloadError(f"line {n}: expected an object", where=f"line {n}")
    for key, kind in (("repository", str), ("digest", str), ("media_type", str), ("size", int),
                      ("blobs", list), ("children", list), ("pushed_at", str)):
        if not isinstance(rec.get(key), kind):
            raise PayloadError(f"line {n}: {key!r} missing or not a {kind.__name__}",
                               where=f"line {n}.{key}")
    if not is_digest(rec["digest"]):
        raise PayloadError(f"line {n}: bad digest {rec['digest']!r}", where=f"line {n}.digest")
    for i, b in enumerate(rec["blobs"]):
        if not (isinstance(b, dict) and is_digest(b.get("digest"))
                and isinstance(b.get("size"), int)):
            raise PayloadError(f"line {n}: blobs[{i}] needs a digest and a size",
                               where=f"line {n}.blobs[{i}]")
    for i, c in enumerate(rec["children"]):
        if not (isinstance(c, dict) and is_digest(c.get("digest"))):
            raise PayloadError(f"line {n}: children[{i}] needs a digest",
                               where=f"line {n}.children[{i}]")


def _time(value: str | None, n: int, key: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise PayloadError(f"line {n}: {key} {value!r} is not a time",
                           where=f"line {n}.{key}") from exc


def load_inventory(store: Store, path: Path | str, *, now: datetime | None = None,
                   registry: str | None = None) -> InventoryLoad:
    """Load ``inventory.jsonl``; ``now`` is the scan time (default: the last push seen)."""
    path = Path(path)
    if registry is None:
        meta = path.with_name("fleet.json")
        registry = (orjson.loads(meta.read_bytes())["spec"]["registry"] if meta.exists()
                    else "fleet")
    records = list(read_inventory(path))
    # a scan knows when it first saw a manifest; the fleet says so in ``first_seen``
    pushed = [_time(r.get("first_seen") or r["pushed_at"], n, "first_seen")
              for n, r in enumerate(records, 1)]
    scanned = now or max((p for p in pushed if p is not None), default=None)
    if scanned is None:
        raise PayloadError(f"{path}: no manifest in the inventory", where="file")
    sizes = {r["digest"]: _total(r) for r in records}
    manifests: list[dict[str, Any]] = []
    blobs: dict[str, dict[str, Any]] = {}
    links: list[dict[str, Any]] = []
    children: list[dict[str, Any]] = []
    for n, (rec, first) in enumerate(zip(records, pushed, strict=True), 1):
        total = sizes[rec["digest"]] + sum(sizes.get(c["digest"], 0) for c in rec["children"])
        manifests.append({
            "repository": rec["repository"], "digest": rec["digest"],
            "media_type": rec["media_type"], "artifact_type": rec.get("artifact_type"),
            "size": rec["size"], "total_bytes": total,
            "created_at": _time(rec.get("created_at"), n, "created_at"),
            "first_seen": first, "last_scanned": scanned,
            "deleted_at": _time(rec.get("deleted_at"), n, "deleted_at"),
            "subject": rec.get("subject"), "referrer_kind": rec.get("referrer_kind"),
            "is_index": bool(rec["children"]), "labels": rec.get("labels"),
            "platform": rec.get("platform"),
        })
        for b in rec["blobs"]:
            blobs.setdefault(b["digest"], {"digest": b["digest"], "size": b["size"],
                                           "media_type": b.get("media_type")})
            links.append({"repository": rec["repository"], "digest": rec["digest"],
                          "blob": b["digest"]})
        for c in rec["children"]:
            children.append({"repository": rec["repository"], "parent": rec["digest"],
                             "child": c["digest"], "platform": c.get("platform")})
    with store.begin() as conn:
        _upsert_manifests(conn, manifests)
        _insert_new(conn, tables.blobs, list(blobs.values()))
        _insert_new(conn, tables.manifest_blobs, _unique(links, ("repository", "digest", "blob")))
        _insert_new(conn, tables.manifest_children,
                    _unique(children, ("repository", "parent", "child")))
        scan_id = conn.execute(insert(tables.scans).values(
            registry=registry, started_at=scanned, finished_at=scanned,
            repositories=len({r["repository"] for r in records}),
            tags=sum(len(r.get("tags") or ()) for r in records),
            manifests=len(records), errors=[],
        ).returning(tables.scans.c.id)).scalar_one()
    return InventoryLoad(len(manifests), len(blobs), len(links), len(children), int(scan_id))


def _total(rec: dict[str, Any]) -> int:
    return int(rec["size"]) + sum(int(b["size"]) for b in rec["blobs"])


def _unique(rows: list[dict[str, Any]], key: tuple[str, ...]) -> list[dict[str, Any]]:
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(tuple(row[k] for k in key), row)
    return list(seen.values())


def _upsert_manifests(conn: Connection, rows: list[dict[str, Any]]) -> None:
    m = tables.manifests
    for i in range(0, len(rows), _BATCH):
        stmt: Any = dialect_insert(conn, m)
        ex = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=[m.c.repository, m.c.digest],
            set_={
                "media_type": ex.media_type, "artifact_type": ex.artifact_type,
                "size": ex.size, "total_bytes": ex.total_bytes, "created_at": ex.created_at,
                "last_scanned": ex.last_scanned, "subject": ex.subject,
                "referrer_kind": ex.referrer_kind, "is_index": ex.is_index,
                "labels": ex.labels, "platform": ex.platform,
                "deleted_at": func.coalesce(ex.deleted_at, m.c.deleted_at),
            },
        )
        conn.execute(stmt, rows[i:i + _BATCH])


def _insert_new(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), _BATCH):
        stmt: Any = dialect_insert(conn, table)
        conn.execute(stmt.on_conflict_do_nothing(), rows[i:i + _BATCH])
