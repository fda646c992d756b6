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
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from .history import (
    DEFAULT_PRODUCTION,
    History,
    days,
    load_history,
    to_datetime,
)
from .tagkind import parse_semver, primary_kind
from .units import (
    alive_units,
    current_tags,
    factorize_pairs,
    running_at,
    tag_spans,
    used_in_window,
    with_unit_columns,
)

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
NEVER = 10_000.0  # days: "never happened"


# --- features ---------------------------------------------------------------------------------


def _group_stats(frame: pd.DataFrame, units: pd.MultiIndex, now: float) -> pd.DataFrame:
    """Per unit: last use, counts in windows, distinct use days and the gaps between them.

    ``frame["unit_id"]`` numbers the units of ``units`` (:func:`with_unit_columns`, once per
    history): grouping by the two string columns at every instant re-hashed every row."""
    ids = frame["unit_id"].to_numpy()
    seen = np.zeros(len(units), dtype=bool)
    seen[ids] = True
    present = np.flatnonzero(seen)
    codes = (np.cumsum(seen) - 1)[ids]  # numbered 0..n-1 in the order of ``units``
    n = len(present)
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
    # Distinct use days per unit, in order, and the gaps between consecutive ones. Days are
    # whole numbers: one integer key per (unit, day) sorts as the pairs would.
    first_day = day.min() if len(day) else 0.0
    span = int(day.max() - first_day) + 1 if len(day) else 1
    pairs = np.unique(codes.astype(np.int64) * span + (day - first_day).astype(np.int64))
    pc, pd_ = pairs // span, (pairs % span).astype(float) + first_day
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
    out = pd.DataFrame(cols, index=units[present])
    out.index.names = ["repository", "unit"]
    return out


def features_at(h: History, now: datetime | float) -> pd.DataFrame:
    """One row per alive unit: ``repository``, ``digest``, ``tags``, ``bytes`` (0 when
    ``size_known`` is false), ``size_known`` and FEATURES."""
    n = now if isinstance(now, float) else days(now)
    if n > h.until + 1e-9:
        raise ValueError("features_at: the history was loaded up to an earlier instant")
    with_unit_columns(h)
    base = alive_units(h, n)
    idx = pd.MultiIndex.from_arrays([base["repository"], base["digest"]],
                                    names=["repository", "unit"])
    out = pd.DataFrame(index=idx)
    # The units as tuples, made once: iterating the MultiIndex builds them again each time.
    keys = list(zip(base["repository"].to_numpy(dtype=object),
                    base["digest"].to_numpy(dtype=object), strict=True))
    out["first_seen"] = base["first_seen"].to_numpy()
    out["bytes"] = base["bytes"].to_numpy()
    out["size_known"] = base["size_known"].to_numpy(dtype=bool)
    out["members"] = base["members"].to_numpy()
    out["is_index"] = base["is_index"].fillna(False).astype(float).to_numpy()
    out["age_days"] = n - out["first_seen"]

    assert h.usage_ids is not None and h.usage_units is not None  # with_unit_columns
    u = _usage_known(h.usage_ids, n)
    use = u[u["is_use"]]
    stats = _group_stats(use, h.usage_units, n) if len(use) else pd.DataFrame()
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
        ids = scan["unit_id"].to_numpy()
        seen = np.bincount(ids, minlength=len(h.usage_units)) > 0
        sums = np.bincount(ids, weights=scan["count"].to_numpy(dtype=float),
                           minlength=len(h.usage_units))
        sc = pd.Series(sums[seen], index=h.usage_units[seen])
        out["scanner_30"] = sc.reindex(out.index).fillna(0.0).to_numpy()
    else:
        out["scanner_30"] = 0.0
    out["scanner_only"] = ((out["scanner_30"] > 0) & (out["uses_90"] == 0)).astype(float)

    dep = h.deploys[(h.deploys["time"] <= n) & h.deploys["digest"].notna()]
    if len(dep):
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
    out["running"] = [float(k in running) for k in keys]
    out["idle_days"] = n - last
    out["idle_over_gap"] = out["idle_days"] / out["gap_max_days"].clip(lower=1.0)

    _tag_features(h, n, out, keys)
    _repo_features(h, n, out, u)
    _client_features(h, n, out)
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


def _usage_known(usage: pd.DataFrame, n: float) -> pd.DataFrame:
    """The rows of ``usage`` (ordered by ``first_at``) as known at ``n``, as
    :func:`history._clip_usage` gives them but in place: a day still in progress counts
    only its first event."""
    usage = usage.iloc[:int(np.searchsorted(usage["first_at"].to_numpy(), n, side="right"))]
    last_at = usage["last_at"].to_numpy()
    whole = last_at <= n
    if whole.all():
        return usage
    return usage.assign(count=np.where(whole, usage["count"].to_numpy(), 1),
                        last_at=np.where(whole, last_at, usage["first_at"].to_numpy()))


def _tag_features(h: History, n: float, out: pd.DataFrame,
                  keys: list[tuple[str, str]]) -> None:
    now_tags = current_tags(h, n)
    tag_lists = [list(now_tags.get(k, ())) for k in keys]  # a frame's lists are its own
    out["tags"] = tag_lists
    out["n_tags"] = [float(len(v)) for v in tag_lists]
    kinds = [primary_kind(v) for v in tag_lists]
    out["kind"] = kinds
    kind_of = np.asarray(kinds, dtype=object)
    for col in KIND_COLUMNS:
        out[col] = (kind_of == col.removeprefix("kind_")).astype(float)
    out.loc[out["kind"] == "signature", "kind_other"] = 1.0
    spans, _ = tag_spans(h, n)
    ever = spans.reindex(out.index)
    out["tagged_ever"] = ever["first"].notna().astype(float).to_numpy()
    # Promotion re-tags an old digest: the newest pointing of a current tag resets its age.
    out["tag_age_days"] = n - ever["newest"].fillna(out["first_seen"]).to_numpy(dtype=float)
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
    m = h.manifests
    repos = out.index.get_level_values(0)
    # Later pushes in the same repository: the main signal for CI builds replaced by newer ones.
    # Pushes after a unit's own (at or before n, as it is alive) and at or before n, counted
    # in each repository's push times sorted once per history.
    if h.push_times is None:
        h.push_times = {r: np.sort(g.to_numpy(dtype=float))
                        for r, g in m.groupby("repository")["first_seen"]}
    firsts = out["first_seen"].to_numpy(dtype=float)
    later = np.zeros(len(firsts))
    codes, names = pd.factorize(repos)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    for j, repo in enumerate(names):
        arr = h.push_times.get(repo)
        if arr is not None:
            rows_of = order[bounds[j]:bounds[j + 1]]
            later[rows_of] = (np.searchsorted(arr, n, side="right")
                              - np.searchsorted(arr, firsts[rows_of], side="right"))
    out["newer_pushes"] = later
    pushed = m["first_seen"]
    recent = m[(pushed <= n) & (pushed > n - 30)].groupby("repository").size()
    out["repo_pushes_30"] = recent.reindex(repos).fillna(0.0).to_numpy()
    use = u[u["is_use"] & (u["last_at"] > n - 30)]
    assert h.usage_repos is not None  # with_unit_columns
    ids = use["repo_id"].to_numpy()
    seen = np.bincount(ids, minlength=len(h.usage_repos)) > 0
    sums = np.bincount(ids, weights=use["count"].to_numpy(dtype=float),
                       minlength=len(h.usage_repos))
    ru = pd.Series(sums[seen], index=h.usage_repos[seen])
    out["repo_uses_30"] = ru.reindex(repos).fillna(0.0).to_numpy()
    out["repo_alive"] = pd.Series(repos).map(pd.Series(repos).value_counts()).to_numpy(
        dtype=float)


def _client_features(h: History, n: float, out: pd.DataFrame) -> None:
    """Distinct real clients of each unit as of ``n``: ever, and first seen in the last 30 and
    90 days (a client's first pull is at or before ``n`` exactly when it had pulled by then,
    so the table's earliest time is all "as of" needs). A client of an index's platform
    manifest is a client of the index, counted once however many members it pulled."""
    ids, firsts, units = _client_firsts(h)
    known = firsts <= n
    if not known.any():
        for col in ("clients", "new_clients_30", "new_clients_90"):
            out[col] = 0.0
        return
    ids, age = ids[known], n - firsts[known]
    k = len(units)
    count = np.bincount(ids, minlength=k)
    seen = count > 0
    per_unit = pd.DataFrame({
        "clients": count[seen],
        "new_30": np.bincount(ids, weights=(age <= 30).astype(float), minlength=k)[seen],
        "new_90": np.bincount(ids, weights=(age <= 90).astype(float), minlength=k)[seen]},
        index=units[seen]).reindex(out.index)
    out["clients"] = per_unit["clients"].fillna(0.0).to_numpy(dtype=float)
    out["new_clients_30"] = per_unit["new_30"].fillna(0.0).to_numpy(dtype=float)
    out["new_clients_90"] = per_unit["new_90"].fillna(0.0).to_numpy(dtype=float)


def _client_firsts(h: History) -> tuple[np.ndarray, np.ndarray, pd.MultiIndex]:
    """Each (repository, unit, client)'s first pull, once per history: its first pull up to an
    instant is this one whenever this one is at or before the instant (later ones are not
    first). As (unit ids, times, the (repository, unit) pairs the ids number)."""
    if h.client_firsts is None:
        c = h.clients
        first = c.groupby(["repository", "unit", "client"])["first_seen"].min().reset_index()
        ids, units = factorize_pairs(first["repository"].to_numpy(dtype=object),
                                     first["unit"].to_numpy(dtype=object))
        h.client_firsts = (ids, first["first_seen"].to_numpy(dtype=float), units)
    return h.client_firsts


def build_features(conn: Connection, *, now: datetime,
                   production: Iterable[str] = DEFAULT_PRODUCTION) -> pd.DataFrame:
    """Features of every alive unit as of ``now`` straight from the store."""
    return features_at(load_history(conn, until=now, production=production), now)
