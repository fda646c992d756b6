"""Features of every alive manifest as of an instant, from the store's summarised tables.

Reads the daily rollups, the distinct real clients per manifest, the tag history, deploy events,
Kubernetes running references and the manifests table -- never the raw pull events -- so the
cost grows with manifests x days (and clients), not with pulls. :func:`load_history` reads
the tables once (up to ``until``); :func:`features_at` is a pure function of that history and
``now`` and sees nothing that happened after ``now``,
which is what lets training replay many past instants from one load.

Times are float days since the Unix epoch inside this module (fast vectorised arithmetic).
An image index is one unit with its platform manifests (a pull of a child is use of the index);
signatures, attestations and SBOMs follow their subject and are not units of their own.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Float, cast, func, select

from .config import DEFAULT_PRODUCTION_ENVS
from .store import tables as t
from .tagkind import parse_semver, primary_kind
from .timeutil import EARLIEST_EVENT

__all__ = [
    "FEATURES",
    "NEVER",
    "KIND_COLUMNS",
    "History",
    "alive_units",
    "build_features",
    "days",
    "features_at",
    "load_history",
    "to_datetime",
    "used_in_window",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KIND_COLUMNS = tuple(f"kind_{k}" for k in (
    "semver", "prerelease", "commit", "build", "date", "branch", "pr", "floating", "test",
    "other", "untagged"))
FEATURES: tuple[str, ...] = (
    "age_days", "tag_age_days", "idle_days", "days_since_use", "uses_7", "uses_30", "uses_90",
    "uses_365", "use_days_90", "use_days_365", "gap_max_days", "gap_mean_days", "idle_over_gap",
    "scanner_30", "scanner_only", "deploys", "days_since_deploy", "prod_deploys",
    "days_since_prod_deploy", "prod_rank", "running", "n_tags", "tagged_ever",
    "days_since_untagged", "has_semver", "newer_versions", "newer_in_line", "is_latest_release",
    "newer_pushes", "repo_pushes_30", "repo_uses_30", "repo_alive", "is_index", "referrers",
    "log_bytes", "clients", "new_clients_30", "new_clients_90", *KIND_COLUMNS,
)
DEFAULT_PRODUCTION = DEFAULT_PRODUCTION_ENVS
NEVER = 10_000.0  # days: "never happened"


def days(value: datetime) -> float:
    """An aware datetime as float days since the epoch."""
    return (value - _EPOCH).total_seconds() / 86400.0


def to_datetime(value: float) -> datetime:
    return _EPOCH + timedelta(days=float(value))


def _days_sql(conn: Connection, column: Any) -> Any:
    """A timestamp column as float days since the epoch, computed by the database: creating a
    Python datetime per row costs more than everything else in this module."""
    if conn.dialect.name == "sqlite":
        expr = func.julianday(column) - 2440587.5
    else:
        expr = func.extract("epoch", column) / 86400.0
    return cast(expr, Float)


def _frame(conn: Connection, stmt: Any, columns: list[str],
           times: tuple[str, ...] = ()) -> pd.DataFrame:
    rows = [tuple(r) for r in conn.execute(stmt)]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for col in times:
        frame[col] = frame[col].astype(float)
    return frame


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
    # Features and guardrails of one instant share the alive units (a few, not every instant).
    alive_cache: dict[float, pd.DataFrame] = field(default_factory=dict, repr=False)

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
                 production: Iterable[str] = DEFAULT_PRODUCTION) -> History:
    """Read what the features and labels need, everything at or before ``until``."""
    u = days(until)
    m = t.manifests
    manifests = _frame(conn, select(
        m.c.repository, m.c.digest, _days_sql(conn, m.c.first_seen),
        _days_sql(conn, m.c.deleted_at), m.c.total_bytes, m.c.size, m.c.subject,
        m.c.referrer_kind, m.c.is_index, m.c.media_type,
    ).where(m.c.first_seen <= until), ["repository", "digest", "first_seen", "deleted_at",
                                        "total_bytes", "size", "subject", "referrer_kind",
                                        "is_index", "media_type"], ("first_seen", "deleted_at"))
    manifests.loc[manifests["deleted_at"] > u, "deleted_at"] = np.nan
    c = t.manifest_children
    children = _frame(conn, select(c.c.repository, c.c.parent, c.c.child),
                      ["repository", "parent", "child"])
    th = t.tag_history
    tags = _frame(conn, select(th.c.repository, th.c.tag, th.c.digest,
                               _days_sql(conn, th.c.valid_from), _days_sql(conn, th.c.valid_to))
                  .where(th.c.valid_from <= until),
                  ["repository", "tag", "digest", "valid_from", "valid_to"],
                  ("valid_from", "valid_to"))
    tags.loc[tags["valid_to"] > u, "valid_to"] = np.nan
    r = t.rollups
    usage = _frame(conn, select(r.c.repository, r.c.digest, r.c.action, r.c.usage, r.c.count,
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
    deploys = _frame(conn, select(e.c.repository, e.c.digest, _days_sql(conn, e.c.time),
                                  e.c.environment)
                     .where(e.c.action == "deploy", e.c.time <= until),
                     ["repository", "digest", "time", "environment"], ("time",))
    globs = tuple(production)
    envs = {env: bool(env) and any(fnmatch.fnmatchcase(str(env).lower(), g) for g in globs)
            for env in deploys["environment"].unique()}
    deploys["production"] = deploys["environment"].map(envs).astype(bool)
    s, rr = t.k8s_snapshots, t.running_refs
    snapshots = _frame(conn, select(s.c.id, s.c.source, _days_sql(conn, s.c.taken_at))
                       .where(s.c.taken_at <= until), ["id", "source", "taken_at"],
                       ("taken_at",))
    refs = _frame(conn, select(rr.c.snapshot_id, rr.c.repository, rr.c.digest, rr.c.tag)
                  .join(s, s.c.id == rr.c.snapshot_id).where(s.c.taken_at <= until),
                  ["snapshot_id", "repository", "digest", "tag"])
    running = refs.merge(snapshots, left_on="snapshot_id", right_on="id")
    running = _resolve_tags(running, tags)
    mc = t.manifest_clients
    clients = _frame(conn, select(mc.c.repository, mc.c.digest, mc.c.client,
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


# --- units ------------------------------------------------------------------------------------


def _unit_map(h: History) -> dict[tuple[str, str], tuple[str, str]]:
    """(repository, digest) of a child or referrer -> the unit (index or subject) it follows.

    Structural facts, the same at every instant of one history: computed once per history."""
    if h.units is None:
        h.units = _build_unit_map(h)
    return h.units


def _build_unit_map(h: History) -> dict[tuple[str, str], tuple[str, str]]:
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for repo, parent, child in h.children.itertuples(index=False):
        out[(repo, child)] = (repo, parent)
    sig = re.compile(r"^sha256-([0-9a-f]{64})\.")
    for row in h.tags.itertuples(index=False):
        match = sig.match(row.tag)
        if match:
            out[(row.repository, row.digest)] = (row.repository, "sha256:" + match.group(1))
    for repo, digest, subject in h.manifests[["repository", "digest", "subject"]].itertuples(
            index=False):
        if isinstance(subject, str) and subject:
            out[(repo, digest)] = (repo, subject)
    # Follow chains (a signature of an index's child is the index's) to the top.
    for key in list(out):
        seen = {key}
        top = out[key]
        while top in out and top not in seen:
            seen.add(top)
            top = out[top]
        out[key] = top
    return out


def _map_units(frame: pd.DataFrame, units: dict[tuple[str, str], tuple[str, str]]) -> pd.Series:
    if frame.empty or not units:
        return frame["digest"]
    table = pd.DataFrame([(r, d, top[1]) for (r, d), top in units.items()],
                         columns=["repository", "digest", "unit"])
    merged = frame[["repository", "digest"]].merge(table, how="left",
                                                   on=["repository", "digest"])
    unit = merged["unit"].where(merged["unit"].notna(), merged["digest"])
    return pd.Series(unit.to_numpy(dtype=object), index=frame.index, dtype=object)


def alive_units(h: History, now: float) -> pd.DataFrame:
    """Manifests alive at ``now`` that are decided on their own (not children, not referrers)."""
    cached = h.alive_cache.get(now)
    if cached is None:
        if len(h.alive_cache) >= 4:
            h.alive_cache.pop(next(iter(h.alive_cache)))
        cached = h.alive_cache[now] = _alive_units(h, now)
    return cached.copy()


def _alive_units(h: History, now: float) -> pd.DataFrame:
    m = h.manifests
    alive = m[(m["first_seen"] <= now) & (m["deleted_at"].isna() | (m["deleted_at"] > now))]
    units = _unit_map(h)
    alive_keys = set(zip(alive["repository"], alive["digest"], strict=True))
    follows = [units.get(k) in alive_keys and units.get(k) != k
               for k in zip(alive["repository"], alive["digest"], strict=True)]
    own = alive[~np.asarray(follows, dtype=bool)].copy() if len(alive) else alive.copy()
    # A unit's bytes include what moves with it (platform manifests, signatures).
    members = alive[np.asarray(follows, dtype=bool)] if len(alive) else alive
    extra: dict[tuple[str, str], float] = {}
    count: dict[tuple[str, str], int] = {}
    for repo, digest, size in members[["repository", "digest", "total_bytes"]].itertuples(
            index=False):
        top = units[(repo, digest)]
        extra[top] = extra.get(top, 0.0) + (0.0 if pd.isna(size) else float(size))
        count[top] = count.get(top, 0) + 1
    # A stable order whatever the database returned (PostgreSQL reorders updated rows).
    own = own.sort_values(["repository", "digest"], kind="stable")
    keys = list(zip(own["repository"], own["digest"], strict=True))
    own["bytes"] = own["total_bytes"].astype(float).fillna(0.0).to_numpy() + np.array(
        [extra.get(k, 0.0) for k in keys], dtype=float)
    own["members"] = [count.get(k, 0) for k in keys]
    # Registry events carry no layer sizes: until a scan reads them the size is unknown, and
    # "bytes" (0 then) must not be shown or counted as a real zero.
    own["size_known"] = own["total_bytes"].notna().to_numpy(dtype=bool)
    return own.reset_index(drop=True)


def used_in_window(h: History, start: float, end: float) -> set[tuple[str, str]]:
    """Units used in (start, end]: a use-class pull, a deploy, or a pod running it."""
    units = _unit_map(h)
    used: set[tuple[str, str]] = set()
    u = h.usage
    w = u[u["is_use"] & (u["last_at"] > start)
          & (u["first_at"] <= end)]
    d = h.deploys[(h.deploys["time"] > start) & (h.deploys["time"] <= end)]
    d = d[d["digest"].notna()]
    r = h.running[(h.running["taken_at"] > start) & (h.running["taken_at"] <= end)]
    for frame in (w, d, r):
        if frame.empty:
            continue
        pairs = frame[["repository", "digest"]].drop_duplicates()
        for key in zip(pairs["repository"], pairs["digest"], strict=True):
            used.add(units.get(key, key))
    # The tags of the window's last running snapshot per source also run after it.
    return used


def running_at(h: History, now: float) -> set[tuple[str, str]]:
    """Units in the latest pod snapshot of each source taken at or before ``now``."""
    snaps = h.snapshots[h.snapshots["taken_at"] <= now]
    if snaps.empty:
        return set()
    latest = snaps.groupby("source")["taken_at"].max().reset_index()
    refs = h.running.merge(latest, on=["source", "taken_at"])
    units = _unit_map(h)
    return {units.get(k, k) for k in zip(refs["repository"], refs["digest"], strict=True)}


def current_tags(h: History, now: float) -> dict[tuple[str, str], list[str]]:
    tg = h.tags
    live = tg[(tg["valid_from"] <= now) & (tg["valid_to"].isna() | (tg["valid_to"] > now))]
    out: dict[tuple[str, str], list[str]] = {}
    for repo, tag, digest in live[["repository", "tag", "digest"]].itertuples(index=False):
        out.setdefault((repo, digest), []).append(tag)
    for v in out.values():
        v.sort()
    return out


# --- features ---------------------------------------------------------------------------------


def _group_stats(frame: pd.DataFrame, key: pd.Series, now: float) -> pd.DataFrame:
    """Per unit: last use, counts in windows, distinct use days and the gaps between them.

    Grouping by two string columns re-hashes the strings for every aggregate; the unit is
    factorised once into integer codes and every aggregate groups by those."""
    codes, uniques = pd.factorize(pd.MultiIndex.from_arrays(
        [frame["repository"].to_numpy(dtype=object), key.to_numpy(dtype=object)]))
    n = len(uniques)
    last_at = frame["last_at"].to_numpy(dtype=float)
    count = frame["count"].to_numpy(dtype=float)
    day = frame["day"].to_numpy(dtype=float)
    last_use = np.full(n, -np.inf)
    np.maximum.at(last_use, codes, last_at)
    cols: dict[str, np.ndarray] = {"last_use": last_use}
    age = now - last_at
    for window in (7, 30, 90, 365):
        cols[f"uses_{window}"] = np.bincount(codes, weights=np.where(age <= window, count, 0.0),
                                             minlength=n)
    # Distinct use days per unit, in order, and the gaps between consecutive ones.
    pairs = np.unique(np.stack([codes.astype(float), day]), axis=1)
    pc, pd_ = pairs[0].astype(np.int64), pairs[1]
    cols["use_days_90"] = np.bincount(pc, weights=(pd_ > now - 90).astype(float), minlength=n)
    recent = pd_ > now - 365
    rc, rd = pc[recent], pd_[recent]
    cols["use_days_365"] = np.bincount(rc, minlength=n).astype(float)
    # A gap needs two use days of one unit in the last year; with none at all (a registry
    # quiet for a year) every array here is empty and every unit gets no gap.
    same = np.zeros(len(rc), dtype=bool)
    same[1:] = rc[1:] == rc[:-1]
    step = np.zeros(len(rd))
    step[1:] = np.diff(rd)
    gap = np.where(same, step, np.nan)
    has_gap = ~np.isnan(gap)
    gap_max = np.full(n, -np.inf)
    np.maximum.at(gap_max, rc[has_gap], gap[has_gap])
    gap_sum = np.bincount(rc[has_gap], weights=gap[has_gap], minlength=n)
    gap_n = np.bincount(rc[has_gap], minlength=n)
    cols["gap_max_days"] = np.where(gap_n > 0, gap_max, np.nan)
    cols["gap_mean_days"] = np.where(gap_n > 0, gap_sum / np.maximum(gap_n, 1), np.nan)
    out = pd.DataFrame(cols, index=uniques)
    out.index.names = ["repository", "unit"]
    return out


def features_at(h: History, now: datetime | float) -> pd.DataFrame:
    """One row per alive unit: ``repository``, ``digest``, ``tags``, ``bytes`` (0 when
    ``size_known`` is false), ``size_known`` and FEATURES."""
    n = now if isinstance(now, float) else days(now)
    if n > h.until + 1e-9:
        raise ValueError("features_at: the history was loaded up to an earlier instant")
    units = _unit_map(h)
    base = alive_units(h, n)
    idx = pd.MultiIndex.from_arrays([base["repository"], base["digest"]],
                                    names=["repository", "unit"])
    out = pd.DataFrame(index=idx)
    out["first_seen"] = base["first_seen"].to_numpy()
    out["bytes"] = base["bytes"].to_numpy()
    out["size_known"] = base["size_known"].to_numpy(dtype=bool)
    out["members"] = base["members"].to_numpy()
    out["is_index"] = base["is_index"].fillna(False).astype(float).to_numpy()
    out["age_days"] = n - out["first_seen"]

    u = h.usage
    u = _clip_usage(u[u["first_at"] <= n], n)
    use = u[u["is_use"]]
    stats = _group_stats(use, _map_units(use, units), n) if len(use) else pd.DataFrame()
    out = out.join(stats) if len(stats) else out.assign(last_use=np.nan)
    for col in ("uses_7", "uses_30", "uses_90", "uses_365", "use_days_90", "use_days_365"):
        out[col] = out[col].fillna(0.0) if col in out else 0.0
    for col in ("gap_max_days", "gap_mean_days"):
        if col not in out:
            out[col] = np.nan
    out["days_since_use"] = n - out["last_use"]
    last = np.fmax(out["last_use"].to_numpy(dtype=float), out["first_seen"].to_numpy(dtype=float))

    scan = u[u["is_scan"] & (u["last_at"] > n - 30)]
    if len(scan):
        sc = scan.assign(unit=_map_units(scan, units).to_numpy()).groupby(
            ["repository", "unit"])["count"].sum()
        out["scanner_30"] = sc.reindex(out.index).fillna(0.0).to_numpy()
    else:
        out["scanner_30"] = 0.0
    out["scanner_only"] = ((out["scanner_30"] > 0) & (out["uses_90"] == 0)).astype(float)

    dep = h.deploys[(h.deploys["time"] <= n) & h.deploys["digest"].notna()]
    if len(dep):
        dep = dep.assign(unit=_map_units(dep, units).to_numpy())
        g = dep.groupby(["repository", "unit"])
        out["deploys"] = g.size().reindex(out.index).fillna(0.0).to_numpy()
        last_dep = g["time"].max().reindex(out.index).to_numpy(dtype=float)
        prod = dep[dep["production"]]
        gp = prod.groupby(["repository", "unit"])["time"]
        out["prod_deploys"] = gp.size().reindex(out.index).fillna(0.0).to_numpy()
        last_prod = gp.max()
        # Rank of each production release by its latest production deploy: 1 is what runs
        # now, 2 and 3 are the rollback targets.
        rank = last_prod.groupby(level=0).rank(ascending=False, method="first")
        out["prod_rank"] = rank.reindex(out.index).to_numpy(dtype=float)
        out["days_since_deploy"] = n - last_dep
        out["days_since_prod_deploy"] = n - last_prod.reindex(out.index).to_numpy(dtype=float)
        last = np.fmax(last, last_dep)
    else:
        for col in ("deploys", "prod_deploys"):
            out[col] = 0.0
        for col in ("prod_rank", "days_since_deploy", "days_since_prod_deploy"):
            out[col] = np.nan

    running = running_at(h, n)
    out["running"] = [float(k in running) for k in out.index]
    out["idle_days"] = n - last
    out["idle_over_gap"] = out["idle_days"] / out["gap_max_days"].clip(lower=1.0)

    _tag_features(h, n, out)
    _repo_features(h, n, out, u)
    _client_features(h, n, out, units)
    out["referrers"] = out["members"].astype(float) - 0.0
    out["log_bytes"] = np.log1p(out["bytes"].astype(float))
    out = out.reset_index().rename(columns={"unit": "digest"})
    for col in FEATURES:
        out[col] = out[col].astype(float)
    # "Never" is a value, not a gap: never used or deployed reads as a very long time ago;
    # no version, no gap, no production rank read as -1 (every column stays numeric and full,
    # which the trees and the rule baselines both rely on).
    for col in ("days_since_use", "days_since_deploy", "days_since_prod_deploy",
                "days_since_untagged"):
        out[col] = out[col].fillna(NEVER)
    for col in ("gap_max_days", "gap_mean_days", "idle_over_gap", "prod_rank",
                "newer_versions", "newer_in_line"):
        out[col] = out[col].fillna(-1.0)
    return out


def _tag_features(h: History, n: float, out: pd.DataFrame) -> None:
    now_tags = current_tags(h, n)
    tg = h.tags[h.tags["valid_from"] <= n]
    keys = list(out.index)
    tag_lists = [now_tags.get(k, []) for k in keys]
    out["tags"] = tag_lists
    out["n_tags"] = [float(len(v)) for v in tag_lists]
    kinds = [primary_kind(v) for v in tag_lists]
    out["kind"] = kinds
    for col in KIND_COLUMNS:
        out[col] = [float(f"kind_{k}" == col) for k in kinds]
    out.loc[out["kind"] == "signature", "kind_other"] = 1.0
    ever = tg.groupby(["repository", "digest"]).agg(first=("valid_from", "min"),
                                                    gone=("valid_to", "max"))
    ever.index.names = ["repository", "unit"]
    ever = ever.reindex(out.index)
    out["tagged_ever"] = ever["first"].notna().astype(float).to_numpy()
    # Promotion re-tags an old digest: the newest pointing of a current tag resets its age.
    live = tg[tg["valid_to"].isna() | (tg["valid_to"] > n)]
    newest = live.groupby(["repository", "digest"])["valid_from"].max()
    newest.index.names = ["repository", "unit"]
    out["tag_age_days"] = n - newest.reindex(out.index).fillna(
        out["first_seen"]).to_numpy(dtype=float)
    untagged = np.asarray([len(v) == 0 for v in tag_lists], dtype=bool)  # bool when empty too
    gone = ever["gone"].to_numpy(dtype=float)
    out["days_since_untagged"] = np.where(untagged & ~np.isnan(gone), n - gone, np.nan)

    versions = [_best_version(v) for v in tag_lists]
    out["has_semver"] = [float(v is not None) for v in versions]
    # Newer versions in the repository (and in the same major.minor line): binary search in
    # each group's sorted version keys instead of comparing every pair.
    by_repo: dict[str, list[Any]] = {}
    by_line: dict[tuple[str, int, int], list[Any]] = {}
    for (repo, _), v in zip(keys, versions, strict=True):
        if v is not None:
            by_repo.setdefault(repo, []).append(v.key())
            by_line.setdefault((repo, *v.line), []).append(v.key())
    for group in (*by_repo.values(), *by_line.values()):
        group.sort()
    newer: list[float] = []
    in_line: list[float] = []
    latest: list[float] = []
    for (repo, _), v in zip(keys, versions, strict=True):
        if v is None:
            newer.append(np.nan)
            in_line.append(np.nan)
            latest.append(0.0)
            continue
        k = v.key()
        group = by_repo[repo]
        newer.append(float(len(group) - bisect.bisect_right(group, k)))
        line = by_line[(repo, *v.line)]
        in_line.append(float(len(line) - bisect.bisect_right(line, k)))
        latest.append(float(newer[-1] == 0))
    out["newer_versions"] = newer
    out["newer_in_line"] = in_line
    out["is_latest_release"] = latest


def _best_version(tags: list[str]):  # type: ignore[no-untyped-def]
    versions = [v for v in (parse_semver(x) for x in tags) if v is not None]
    return max(versions, key=lambda v: v.key()) if versions else None


def _repo_features(h: History, n: float, out: pd.DataFrame, u: pd.DataFrame) -> None:
    m = h.manifests[h.manifests["first_seen"] <= n]
    repos = out.index.get_level_values(0)
    # Later pushes in the same repository: the main signal for CI builds replaced by newer ones.
    later = []
    pushes = {r: np.sort(g.to_numpy(dtype=float)) for r, g in m.groupby("repository")["first_seen"]}
    for repo, first in zip(repos, out["first_seen"].to_numpy(dtype=float), strict=True):
        arr = pushes.get(repo)
        later.append(float(len(arr) - np.searchsorted(arr, first, side="right"))
                     if arr is not None else 0.0)
    out["newer_pushes"] = later
    recent = m[m["first_seen"] > n - 30].groupby("repository").size()
    out["repo_pushes_30"] = recent.reindex(repos).fillna(0.0).to_numpy()
    use = u[u["is_use"] & (u["last_at"] > n - 30)]
    ru = use.groupby("repository")["count"].sum()
    out["repo_uses_30"] = ru.reindex(repos).fillna(0.0).to_numpy()
    out["repo_alive"] = pd.Series(repos).map(pd.Series(repos).value_counts()).to_numpy(
        dtype=float)


def _client_features(h: History, n: float, out: pd.DataFrame,
                     units: dict[tuple[str, str], tuple[str, str]]) -> None:
    """Distinct real clients of each unit as of ``n``: ever, and first seen in the last 30 and
    90 days (a client's first pull is at or before ``n`` exactly when it had pulled by then,
    so the table's earliest time is all "as of" needs). A client of an index's platform
    manifest is a client of the index, counted once however many members it pulled."""
    c = h.clients
    c = c[c["first_seen"] <= n]
    if c.empty:
        for col in ("clients", "new_clients_30", "new_clients_90"):
            out[col] = 0.0
        return
    c = c.assign(unit=_map_units(c, units).to_numpy())
    first = c.groupby(["repository", "unit", "client"])["first_seen"].min().reset_index()
    age = n - first["first_seen"].to_numpy(dtype=float)
    first["new_30"] = (age <= 30).astype(float)
    first["new_90"] = (age <= 90).astype(float)
    per_unit = first.groupby(["repository", "unit"]).agg(
        clients=("client", "size"), new_30=("new_30", "sum"), new_90=("new_90", "sum"))
    per_unit = per_unit.reindex(out.index)
    out["clients"] = per_unit["clients"].fillna(0.0).to_numpy(dtype=float)
    out["new_clients_30"] = per_unit["new_30"].fillna(0.0).to_numpy(dtype=float)
    out["new_clients_90"] = per_unit["new_90"].fillna(0.0).to_numpy(dtype=float)


def build_features(conn: Connection, *, now: datetime,
                   production: Iterable[str] = DEFAULT_PRODUCTION) -> pd.DataFrame:
    """Features of every alive unit as of ``now`` straight from the store."""
    return features_at(load_history(conn, until=now, production=production), now)
