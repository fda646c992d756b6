"""Multi-row ``INSERT ... VALUES (...), (...)`` straight through the DB-API, for the hot path.

SQLAlchemy Core processes every parameter of every row through its type system; at tens of
thousands of events per second that is most of the cost. Here one statement carries up to
~30,000 parameters and values are converted once, by hand, the way the column types would:
times become aware UTC (PostgreSQL) or SQLAlchemy's own SQLite text form, so rows written
here read back exactly like rows written through Core. The SQL (``ON CONFLICT``,
``RETURNING``, ``excluded``) is the same on SQLite >= 3.35 and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Date, Table

from ..store.types import UTCDateTime

__all__ = ["flat_rows", "insert_flat", "insert_rows", "sqlite_time"]

_MAX_PARAMS = 30_000  # SQLite allows 32,766 per statement, PostgreSQL 65,535


def sqlite_time(value: datetime | None) -> str | None:
    """A time as SQLite stores it: fixed width, so these strings sort as the times do."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError(f"naive datetime refused by the store: {value!r}")
        value = value.astimezone(UTC)
    # SQLAlchemy's SQLite DATETIME storage form: 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return value.isoformat(" ", "microseconds")[:26]


def _sqlite_date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _pg_time(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"naive datetime refused by the store: {value!r}")
    return value


def _convert_column(fn: Callable[[Any], Any], values: list[Any]) -> list[Any]:
    """``fn`` over one column. A column holding one object throughout (a batch's
    ``received_at``) is converted once; ``list.count`` checks that at C speed."""
    first = values[0]
    if values.count(first) == len(values):
        return [fn(first)] * len(values)
    return list(map(fn, values))


def _converters(conn: Connection, table: Table, columns: Sequence[str]
                ) -> list[Callable[[Any], Any] | None]:
    sqlite = conn.dialect.name == "sqlite"
    out: list[Callable[[Any], Any] | None] = []
    for name in columns:
        typ = table.c[name].type
        if isinstance(typ, UTCDateTime):
            out.append(sqlite_time if sqlite else _pg_time)
        elif isinstance(typ, Date) and sqlite:
            out.append(_sqlite_date)
        else:
            out.append(None)
    return out


def _chunk_sizes(total: int, limit: int) -> list[int]:
    """Rows per statement: the largest power of two under ``limit``, then the remainder in
    powers of two. Few distinct statement texts, so the driver's prepared-statement cache
    (sqlite3 keeps 128; psycopg prepares repeated ones) stays small and gets hits; one text
    per row count would fill it with multi-megabyte statements that are never reused."""
    biggest = 1 << max(0, limit.bit_length() - 1)
    sizes = [biggest] * (total // biggest)
    rest = total % biggest
    bit = biggest >> 1
    while rest:
        if rest & bit:
            sizes.append(bit)
            rest -= bit
        bit >>= 1
    return sizes


def insert_rows(conn: Connection, table: Table, columns: Sequence[str],
                rows: Sequence[Sequence[Any]], *, suffix: str = "", returning: str = "",
                spans: list[tuple[int, int, int]] | None = None,
                converted: bool = False) -> list[Any]:
    """Insert ``rows`` (tuples in ``columns`` order); ``suffix`` is e.g. an ``ON CONFLICT``
    clause, ``returning`` a column list. Returns the rows ``RETURNING`` gave.

    ``converted``: the caller already gave times and dates in the store's form (SQLite: the
    strings of :func:`sqlite_time`), so no column is converted here.

    ``spans`` receives, per statement, (rows sent, rows inserted, last inserted rowid) —
    SQLite's answer to "which rows are new" without the cost of ``RETURNING``.
    """
    if not rows:
        return []
    convert = [] if converted else [
        (i, fn) for i, fn in enumerate(_converters(conn, table, columns)) if fn is not None]
    width = len(columns)

    def chunks() -> Iterator[Sequence[Any]]:
        for flat in _flattened(rows, width):
            if not convert:
                yield flat
                continue
            # Each converted column replaced in place through a stride: slice assignment,
            # no per-row Python loop.
            params = list(flat)
            for i, fn in convert:
                params[i::width] = _convert_column(fn, params[i::width])
            yield params

    return insert_flat(conn, table, columns, chunks(), suffix=suffix, returning=returning,
                       spans=spans)


def flat_rows(rows: Sequence[Sequence[Any]], width: int) -> list[tuple[Any, ...]]:
    """``rows`` as :func:`insert_flat` takes them: one flat tuple of parameters per statement.
    Built where the rows are made (the file ingest's parsing process), the writer binds them
    as they come: no per-row work, and one tuple per ~1,000 rows to pickle, not one per row."""
    return list(_flattened(rows, width))


def _flattened(rows: Sequence[Sequence[Any]], width: int) -> Iterator[tuple[Any, ...]]:
    start = 0
    for size in _chunk_sizes(len(rows), _MAX_PARAMS // width):
        yield tuple(chain.from_iterable(rows[start:start + size]))  # at C speed
        start += size


def insert_flat(conn: Connection, table: Table, columns: Sequence[str],
                chunks: Iterable[Sequence[Any]], *, suffix: str = "", returning: str = "",
                spans: list[tuple[int, int, int]] | None = None) -> list[Any]:
    """:func:`insert_rows` for rows already in the store's form and flattened, one statement
    per chunk (:func:`flat_rows`)."""
    quote = conn.dialect.identifier_preparer.quote
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    one = "(" + ", ".join([mark] * len(columns)) + ")"
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) VALUES "
    tail = (f" {suffix}" if suffix else "") + (f" RETURNING {returning}" if returning else "")
    width = len(columns)
    result: list[Any] = []
    for params in chunks:
        count = len(params) // width
        cursor = conn.exec_driver_sql(head + ", ".join([one] * count) + tail,
                                      params if type(params) is tuple else tuple(params))
        if spans is not None:
            spans.append((count, cursor.rowcount, cursor.lastrowid))
        if returning:
            result.extend(cursor.fetchall())
    return result
