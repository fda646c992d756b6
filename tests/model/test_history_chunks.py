"""Reading the history in chunks gives the frames the whole-result reading gave, on both stores.

The oracle is the reading the chunks replaced: every row as a tuple, ``from_records`` once.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Connection, insert, select

from recommender.history import _days_sql, load_history, read_frame
from recommender.store import Store
from recommender.store import tables as t

from . import synth
from .builders import at, digest

COLUMNS = ["repository", "digest", "first_seen", "deleted_at", "total_bytes", "size",
           "subject", "referrer_kind", "is_index", "media_type"]
TIMES = ("first_seen", "deleted_at")


def _whole(conn: Connection, stmt: Any, columns: list[str],
           times: tuple[str, ...] = ()) -> pd.DataFrame:
    rows = [tuple(r) for r in conn.execute(stmt)]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for col in times:
        frame[col] = frame[col].astype(float)
    return frame


def _manifests(conn: Connection) -> Any:
    m = t.manifests
    return select(m.c.repository, m.c.digest, _days_sql(conn, m.c.first_seen),
                  _days_sql(conn, m.c.deleted_at), m.c.total_bytes, m.c.size, m.c.subject,
                  m.c.referrer_kind, m.c.is_index, m.c.media_type).order_by(m.c.digest)


def _write(store: Store, rows: list[dict[str, object]]) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(t.manifests), rows)


def _row(n: int, **values: object) -> dict[str, object]:
    # Digests sort in n's order, so the chunks of the ordered read are known.
    row: dict[str, object] = {"repository": f"team/app{n % 3}", "digest": f"sha256:{n:064d}",
                              "first_seen": at(n), "is_index": False, "total_bytes": None,
                              "size": None, "subject": None, "referrer_kind": None,
                              "deleted_at": None, "media_type": None}
    row.update(values)
    return row


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 1000])
def test_columns_empty_in_one_chunk_and_filled_in_another_read_as_a_whole(
        store: Store, chunk_rows: int) -> None:
    # Rows 0-2 leave every nullable column empty; rows 3-5 fill them: with two or three rows a
    # chunk, a column is all None in one chunk and numbers, strings or times in another.
    empty = [_row(n) for n in range(3)]
    filled = [_row(n, total_bytes=10 ** 12 + n, size=n, subject=digest(f"s{n}"),
                   referrer_kind="signature", deleted_at=at(n + 0.5),
                   media_type="application/vnd.oci.image.manifest.v1+json", is_index=n == 4)
              for n in range(3, 6)]
    _write(store, empty + filled)
    with store.connect() as conn:
        stmt = _manifests(conn)
        expected = _whole(conn, stmt, COLUMNS, TIMES)
        got = read_frame(conn, stmt, COLUMNS, TIMES, chunk_rows=chunk_rows)
    pd.testing.assert_frame_equal(got, expected)
    # The reading is about these odd columns: say they are what the test means them to be.
    assert expected["size"].dtype == "float64" and expected["size"].isna().sum() == 3
    assert expected["subject"].isna().sum() == 3 and expected["deleted_at"].isna().sum() == 3
    assert expected["is_index"].tolist() == [False] * 4 + [True, False]


def test_an_empty_result_and_a_column_never_filled(store: Store) -> None:
    with store.connect() as conn:
        stmt = _manifests(conn)
        pd.testing.assert_frame_equal(read_frame(conn, stmt, COLUMNS, TIMES, chunk_rows=2),
                                      _whole(conn, stmt, COLUMNS, TIMES))
    _write(store, [_row(n) for n in range(5)])
    with store.connect() as conn:
        expected = _whole(conn, stmt, COLUMNS, TIMES)
        got = read_frame(conn, stmt, COLUMNS, TIMES, chunk_rows=2)
    pd.testing.assert_frame_equal(got, expected)
    assert expected["subject"].isna().all() and len(expected) == 5


def test_a_repeated_string_is_kept_once_across_chunks(store: Store) -> None:
    _write(store, [_row(n, referrer_kind="signature") for n in range(6)])
    with store.connect() as conn:
        got = read_frame(conn, _manifests(conn), COLUMNS, TIMES, chunk_rows=2)
    kinds = got["referrer_kind"].to_numpy(dtype=object)
    assert len({id(kind) for kind in kinds}) == 1
    assert len({id(repo) for repo in got["repository"].to_numpy(dtype=object)}) == 3


def test_the_history_read_in_tiny_chunks_is_the_history_read_whole(store: Store) -> None:
    synth.generate(store, days=60, ci_repos=2, release_repos=1, cron_repos=1)
    with store.connect() as conn:
        whole = load_history(conn, until=at(50), chunk_rows=10 ** 9)
        chunked = load_history(conn, until=at(50), chunk_rows=7)
    assert len(whole.usage) > 7 * 3  # several chunks were read
    for f in fields(whole):
        a, b = getattr(whole, f.name), getattr(chunked, f.name)
        if isinstance(a, pd.DataFrame):
            pd.testing.assert_frame_equal(b, a, obj=f.name)
        else:
            assert b == a, f.name
