"""The history that features are computed from, read once from the store's summarised tables.

:func:`load_history` reads the daily rollups, distinct clients, tag history, deploy events,
Kubernetes running references and manifests up to ``until`` into a :class:`History` of
frames; times in it are float days since the Unix epoch (:func:`days`, :func:`to_datetime`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Float, cast, func, select

from .config import DEFAULT_PRODUCTION_ENVS
from .store import tables as t
from .timeutil import EARLIEST_EVENT

__all__ = ["DEFAULT_PRODUCTION", "History", "days", "load_history", "rows", "to_datetime"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_PRODUCTION = DEFAULT_PRODUCTION_ENVS


def days(value: datetime) -> float:
    """An aware datetime as float days since the epoch."""
    return (value - _EPOCH).total_seconds() / 86400.0


def to_datetime(value: float) -> datetime:
    return _EPOCH + timedelta(days=float(value))


def rows(frame: pd.DataFrame, *columns: str) -> Iterator[tuple[Any, ...]]:
    """The values of ``columns`` row by row as Python objects, as ``itertuples`` gives them:
    iterating a column of pandas' string dtype fetches each value through Python, several
    times slower than going through its object array."""
    return zip(*(frame[col].to_numpy(dtype=object) for col in columns), strict=True)


def _days_sql(conn: Connection, column: Any) -> Any:
    """A timestamp column as float days since the epoch, computed by the database: creating a
    Python datetime per row costs more than everything else in this module."""
    if conn.dialect.name == "sqlite":
        expr = func.julianday(column) - 2440587.5
    else:
        expr = func.extract("epoch", column) / 86400.0
    return cast(expr, Float)


# Rows fetched and converted at a time: a chunk's Python row objects are dropped before the
# next is read, so memory holds the frame's columns, not ten million tuples.
CHUNK_ROWS = 100_000


def read_frame(conn: Connection, stmt: Any, columns: list[str],
               times: tuple[str, ...] = (), *, chunk_rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """The statement's rows as a frame, the same as ``DataFrame.from_records`` on all of them
    (then ``times`` as float), built chunk by chunk. Each distinct string is kept once across
    chunks (the driver makes a new one per value), and other columns take their dtype from
    pandas' inference over the whole column, as ``from_records`` would."""
    if conn.dialect.name != "sqlite":
        # A server-side cursor: PostgreSQL would otherwise send every row at once. SQLite's
        # cursor already steps row by row, and the buffered fetch costs a deque pop per row.
        stmt = stmt.execution_options(stream_results=True, max_row_buffer=chunk_rows)
    result = conn.execute(stmt)
    timed = [col in times for col in columns]
    parts: list[list[np.ndarray]] = [[] for _ in columns]
    strings: dict[str, str] = {}
    for chunk in result.partitions(chunk_rows):
        for i, values in enumerate(zip(*chunk, strict=True)):
            if timed[i]:
                parts[i].append(np.array(values, dtype=float))  # None becomes NaN
            else:
                column = np.empty(len(values), dtype=object)
                column[:] = values  # not np.array(values): a sequence value would add a dimension
                parts[i].append(_canonical(column, strings))
    if not parts or not parts[0]:
        frame = pd.DataFrame.from_records([], columns=columns)
        for col in times:
            frame[col] = frame[col].astype(float)
        return frame
    data: dict[str, Any] = {}
    for i, col in enumerate(columns):
        joined = np.concatenate(parts[i])
        parts[i] = []
        data[col] = joined if timed[i] else pd.Series(joined, copy=False).infer_objects()
    return pd.DataFrame(data, columns=columns, copy=False)


def _canonical(values: np.ndarray, strings: dict[str, str]) -> np.ndarray:
    """``values`` with each string replaced by the one kept for it in ``strings``: a column of
    repeated keys then costs a pointer per row. Left as is when anything in it is not a
    string (``factorize`` would take 1, 1.0 and True for one value)."""
    codes, uniques = pd.factorize(values)
    if not len(uniques) or pd.api.types.infer_dtype(uniques, skipna=False) != "string":
        return values
    kept = np.empty(len(uniques) + 1, dtype=object)  # the last one stands for None (code -1)
    kept[:-1] = [strings.setdefault(u, u) for u in uniques]
    return kept.take(codes)


@dataclass
class History:
    """The store's summarised tables up to ``until``, times in float days."""

    until: float
    manifests: pd.DataFrame  # repository digest first_seen deleted_at bytes subject is_index ...
    children: pd.DataFrame  # repository parent child
    tags: pd.DataFrame  # repository tag digest valid_from valid_to
    usage: pd.DataFrame  # repository digest day action usage count first_at last_at
    deploys: pd.DataFrame  # repository digest time production
    running: pd.DataFrame  # repository digest source taken_at (one row per ref)
    snapshots: pd.DataFrame  # source taken_at
    production: tuple[str, ...] = field(default=DEFAULT_PRODUCTION)
    # repository digest client first_seen: one row per distinct real client of a manifest.
    clients: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        {"repository": [], "digest": [], "client": [], "first_seen": []}))
    units: dict[tuple[str, str], tuple[str, str]] | None = field(default=None, repr=False)
    # Usage as numbers for the features at every instant (:func:`units.with_unit_columns`):
    # ``unit_id`` numbers (repository, unit) pairs of ``usage_units``, ``repo_id`` the
    # repositories of ``usage_repos``; count, times and the use and scan flags as in usage.
    usage_ids: pd.DataFrame | None = field(default=None, repr=False)
    usage_units: pd.MultiIndex | None = field(default=None, repr=False)
    usage_repos: pd.Index | None = field(default=None, repr=False)
    # Manifests in (repository, digest) order, and the row each follows (-1: none).
    manifest_tops: tuple[pd.DataFrame, np.ndarray] | None = field(default=None, repr=False)
    # Manifests that follow another (row, key, the key it follows), in the manifests' order.
    followers: list[tuple[int, tuple[str, str], tuple[str, str]]] | None = field(
        default=None, repr=False)
    # Each repository's push times (manifests' first_seen), sorted.
    push_times: dict[str, np.ndarray] | None = field(default=None, repr=False)
    # Each (repository, unit, client)'s first pull: unit ids, times, the units they number.
    client_firsts: tuple[np.ndarray, np.ndarray, pd.MultiIndex] | None = field(
        default=None, repr=False)
    # The tags' rows numbered by (repository, digest), the pairs as an index and as tuples.
    tag_keys: tuple[np.ndarray, pd.MultiIndex, list[tuple[str, str]]] | None = field(
        default=None, repr=False)
    # Features and guardrails of one instant share the alive units (a few, not every instant).
    alive_cache: dict[float, pd.DataFrame] = field(default_factory=dict, repr=False)
    # Likewise the tags of one instant (read by the features and by the guardrails).
    tags_cache: dict[float, dict[tuple[str, str], list[str]]] = field(default_factory=dict,
                                                                      repr=False)

    @property
    def start(self) -> float | None:
        """The earliest instant the history knows about (first push or first use), times
        before the registry era left out: one event dated 0001-01-01 must not make training
        replay two thousand years of weekly snapshots."""
        era = days(EARLIEST_EVENT)
        first_seen, first_at = self.manifests["first_seen"], self.usage["first_at"]
        firsts = [first_seen[first_seen >= era].min() if len(first_seen) else np.nan,
                  first_at[first_at >= era].min() if len(first_at) else np.nan]
        values = [f for f in firsts if not pd.isna(f)]
        return float(min(values)) if values else None


def load_history(conn: Connection, *, until: datetime,
                 production: Iterable[str] = DEFAULT_PRODUCTION,
                 chunk_rows: int = CHUNK_ROWS) -> History:
    """Read what the features and labels need, everything at or before ``until``."""
    u = days(until)

    def frame(stmt: Any, columns: list[str], times: tuple[str, ...] = ()) -> pd.DataFrame:
        return read_frame(conn, stmt, columns, times, chunk_rows=chunk_rows)

    m = t.manifests
    manifests = frame(select(
        m.c.repository, m.c.digest, _days_sql(conn, m.c.first_seen),
        _days_sql(conn, m.c.deleted_at), m.c.total_bytes, m.c.size, m.c.subject,
        m.c.referrer_kind, m.c.is_index, m.c.media_type,
    ).where(m.c.first_seen <= until), ["repository", "digest", "first_seen", "deleted_at",
                                        "total_bytes", "size", "subject", "referrer_kind",
                                        "is_index", "media_type"], ("first_seen", "deleted_at"))
    manifests.loc[manifests["deleted_at"] > u, "deleted_at"] = np.nan
    c = t.manifest_children
    children = frame(select(c.c.repository, c.c.parent, c.c.child),
                      ["repository", "parent", "child"])
    th = t.tag_history
    tags = frame(select(th.c.repository, th.c.tag, th.c.digest,
                               _days_sql(conn, th.c.valid_from), _days_sql(conn, th.c.valid_to))
                  .where(th.c.valid_from <= until),
                  ["repository", "tag", "digest", "valid_from", "valid_to"],
                  ("valid_from", "valid_to"))
    tags.loc[tags["valid_to"] > u, "valid_to"] = np.nan
    r = t.rollups
    usage = frame(select(r.c.repository, r.c.digest, r.c.action, r.c.usage, r.c.count,
                                _days_sql(conn, r.c.first_at), _days_sql(conn, r.c.last_at))
                   .where(r.c.day <= until.date(), r.c.digest != "",
                          r.c.action.in_(("pull", "push"))),
                   ["repository", "digest", "action", "usage", "count", "first_at", "last_at"],
                   ("first_at", "last_at"))
    usage["day"] = np.floor(usage["first_at"].to_numpy(dtype=float))
    # Compared once here rather than at every replayed instant (string compares dominate).
    pull = (usage["action"] == "pull").to_numpy(dtype=bool)
    usage["is_use"] = pull & (usage["usage"] == "use").to_numpy(dtype=bool)
    usage["is_scan"] = pull & (usage["usage"] == "scanner").to_numpy(dtype=bool)
    usage = _clip_usage(usage, u)
    e = t.events
    deploys = frame(select(e.c.repository, e.c.digest, _days_sql(conn, e.c.time),
                                  e.c.environment)
                     .where(e.c.action == "deploy", e.c.time <= until),
                     ["repository", "digest", "time", "environment"], ("time",))
    globs = tuple(production)
    envs = {env: bool(env) and any(fnmatch.fnmatchcase(str(env).lower(), g) for g in globs)
            for env in deploys["environment"].unique()}
    deploys["production"] = deploys["environment"].map(envs).astype(bool)
    s, rr = t.k8s_snapshots, t.running_refs
    snapshots = frame(select(s.c.id, s.c.source, _days_sql(conn, s.c.taken_at))
                       .where(s.c.taken_at <= until), ["id", "source", "taken_at"],
                       ("taken_at",))
    refs = frame(select(rr.c.snapshot_id, rr.c.repository, rr.c.digest, rr.c.tag)
                  .join(s, s.c.id == rr.c.snapshot_id).where(s.c.taken_at <= until),
                  ["snapshot_id", "repository", "digest", "tag"])
    running = refs.merge(snapshots, left_on="snapshot_id", right_on="id")
    running = _resolve_tags(running, tags)
    mc = t.manifest_clients
    clients = frame(select(mc.c.repository, mc.c.digest, mc.c.client,
                                  _days_sql(conn, mc.c.first_seen))
                     .where(mc.c.first_seen <= until),
                     ["repository", "digest", "client", "first_seen"], ("first_seen",))
    return History(u, manifests, children, tags, usage, deploys, running,
                   snapshots[["source", "taken_at"]], globs, clients=clients)


def _clip_usage(usage: pd.DataFrame, now: float) -> pd.DataFrame:
    """Rollup rows as known at ``now``: a day still in progress counts only its first event."""
    if usage.empty:
        return usage
    whole = usage["last_at"] <= now
    partial = ~whole & (usage["first_at"] <= now)
    cut = usage[partial].copy()
    cut["count"] = 1
    cut["last_at"] = cut["first_at"]
    return pd.concat([usage[whole], cut], ignore_index=True)


def _resolve_tags(refs: pd.DataFrame, tags: pd.DataFrame) -> pd.DataFrame:
    """A pod that names only a tag runs what the tag pointed at when the snapshot was taken."""
    refs = refs.copy()
    missing = refs["digest"].isna() & refs["tag"].notna()
    if missing.any() and not tags.empty:
        cand = refs[missing].reset_index().merge(tags, on=["repository", "tag"],
                                                 suffixes=("", "_t"))
        ok = (cand["valid_from"] <= cand["taken_at"]) & (
            cand["valid_to"].isna() | (cand["valid_to"] > cand["taken_at"]))
        cand = cand[ok].drop_duplicates("index", keep="last")
        refs.loc[cand["index"].to_numpy(), "digest"] = cand["digest_t"].to_numpy()
    return refs[refs["digest"].notna()][["repository", "digest", "source", "taken_at"]]
