"""load_inventory writes the inventory tables as a scan would, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from recommender import inventory
from recommender.errors import PayloadError
from recommender.fleet import load_inventory
from recommender.store import Store, tables
from recommender.timeutil import parse_time

from .conftest import Fleet


def _count(store: Store, table: object) -> int:
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_inventory_lands_in_the_tables(store: Store, fleet: Fleet) -> None:
    result = load_inventory(store, fleet.files.inventory)
    inv = fleet.inventory
    assert result.manifests == _count(store, tables.manifests) == len(inv)
    assert _count(store, tables.manifest_children) == sum(len(r["children"]) for r in inv)
    assert _count(store, tables.blobs) == len({b["digest"] for r in inv for b in r["blobs"]})
    assert _count(store, tables.scans) == 1
    by_digest = fleet.by_digest()
    m = tables.manifests.c
    with store.connect() as conn:
        rows = {r.digest: r for r in conn.execute(select(tables.manifests))}
        deleted = {d for d, r in rows.items() if r.deleted_at is not None}
        assert deleted == {r["digest"] for r in inv if r["deleted_at"]}
        index = next(r for r in inv if r["kind"] == "index")
        own = index["size"]
        kids = sum(by_digest[c["digest"]]["size"] + sum(b["size"]
                   for b in by_digest[c["digest"]]["blobs"]) for c in index["children"])
        assert rows[index["digest"]].total_bytes == own + kids
        assert rows[index["digest"]].is_index
        sig = next(r for r in inv if r["kind"] == "signature")
        assert rows[sig["digest"]].subject == sig["subject"]
        assert rows[sig["digest"]].referrer_kind == "signature"
        assert rows[sig["digest"]].first_seen == parse_time(sig["pushed_at"])
        # layer de-duplication: two builds sharing base layers free less than their sum
        image = next(r for r in inv if r["kind"] == "image" and not r["deleted_at"]
                     and len(r["blobs"]) > 3)
        key = (image["repository"], image["digest"])
        alone = inventory.reclaimable_bytes(conn, [key])
        assert 0 < alone < rows[image["digest"]].total_bytes
        links = conn.execute(select(func.count()).where(
            tables.manifest_blobs.c.digest == image["digest"])).scalar_one()
        assert links == len(image["blobs"])
        assert conn.execute(select(func.count()).where(m.platform == "linux/arm64")
                            ).scalar_one() > 0


def test_loading_twice_changes_nothing_but_the_scan_log(sqlite_store: Store,
                                                        fleet: Fleet) -> None:
    load_inventory(sqlite_store, fleet.files.inventory)
    before = (_count(sqlite_store, tables.manifests), _count(sqlite_store, tables.manifest_blobs))
    load_inventory(sqlite_store, fleet.files.inventory)
    assert (_count(sqlite_store, tables.manifests),
            _count(sqlite_store, tables.manifest_blobs)) == before
    assert _count(sqlite_store, tables.scans) == 2


@pytest.mark.parametrize(("line", "where"), [
    (b"{not json", "line 3"),
    (b'{"repository": "a", "digest": "sha256:12", "media_type": "x", "size": 1, "blobs": [],'
     b' "children": [], "pushed_at": "2025-01-01T00:00:00Z"}', "line 3.digest"),
    (b'{"repository": "a"}', "line 3.digest"),
])
def test_a_bad_line_is_named_and_nothing_is_written(sqlite_store: Store, fleet: Fleet,
                                                    tmp_path: Path, line: bytes,
                                                    where: str) -> None:
    good = fleet.files.inventory.read_bytes().splitlines()[:2]
    path = tmp_path / "inventory.jsonl"
    path.write_bytes(b"\n".join([*good, line]) + b"\n")
    with pytest.raises(PayloadError) as err:
        load_inventory(sqlite_store, path)
    assert err.value.detail["where"] == where
    assert _count(sqlite_store, tables.manifests) == 0
    assert orjson.loads(good[0])["digest"]  # the good lines were fine on their own
