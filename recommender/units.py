"""Units over a :class:`History`: which manifests are one unit (an index with its platform
manifests, a subject with its signatures and SBOMs), which are alive, used in a window, running
or tagged at an instant.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .history import History, rows

__all__ = ["alive_units", "current_tags", "factorize_pairs", "running_at", "tag_spans",
           "used_in_window", "with_unit_columns"]

# --- units ------------------------------------------------------------------------------------


def _unit_map(h: History) -> dict[tuple[str, str], tuple[str, str]]:
    """(repository, digest) of a child or referrer -> the unit (index or subject) it follows.

    Structural facts, the same at every instant of one history: computed once per history."""
    if h.units is None:
        h.units = _build_unit_map(h)
    return h.units


def _build_unit_map(h: History) -> dict[tuple[str, str], tuple[str, str]]:
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for repo, parent, child in rows(h.children, "repository", "parent", "child"):
        out[(repo, child)] = (repo, parent)
    sig = re.compile(r"^sha256-([0-9a-f]{64})\.")
    for repo, tag, digest in rows(h.tags, "repository", "tag", "digest"):
        match = sig.match(tag)
        if match:
            out[(repo, digest)] = (repo, "sha256:" + match.group(1))
    for repo, digest, subject in rows(h.manifests, "repository", "digest", "subject"):
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
    repos = frame["repository"].to_numpy(dtype=object)
    digests = frame["digest"].to_numpy(dtype=object)
    if not (pd.isna(repos).any() or pd.isna(digests).any()):
        # Each distinct (repository, digest) looked up once, not merged row by row.
        ids, pairs = factorize_pairs(repos, digests)
        named = np.asarray([units.get(key, key)[1] for key in zip(
            pairs.get_level_values(0).to_numpy(dtype=object),
            pairs.get_level_values(1).to_numpy(dtype=object), strict=True)], dtype=object)
        return pd.Series(named[ids], index=frame.index, dtype=object)
    table = pd.DataFrame([(r, d, top[1]) for (r, d), top in units.items()],
                         columns=["repository", "digest", "unit"])
    merged = frame[["repository", "digest"]].merge(table, how="left",
                                                   on=["repository", "digest"])
    unit = merged["unit"].where(merged["unit"].notna(), merged["digest"])
    return pd.Series(unit.to_numpy(dtype=object), index=frame.index, dtype=object)


def factorize_pairs(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, pd.MultiIndex]:
    """``pd.factorize(pd.MultiIndex.from_arrays([first, second]))``: ids numbering the pairs in
    order of first appearance, and the pairs. Each column is factorised on its own and the
    pairs of codes as integers: factorising the MultiIndex builds a tuple per row."""
    a, a_values = pd.factorize(first)
    b, b_values = pd.factorize(second)
    if (a < 0).any() or (b < 0).any():  # a missing value: let pandas decide what it means
        ids, index = pd.factorize(pd.MultiIndex.from_arrays([first, second]))
        return ids, index
    width = max(len(b_values), 1)
    ids, pairs = pd.factorize(a.astype(np.int64) * width + b)
    index = pd.MultiIndex.from_arrays([np.asarray(a_values, dtype=object)[pairs // width],
                                       np.asarray(b_values, dtype=object)[pairs % width]])
    return ids, index


def with_unit_columns(h: History) -> History:
    """Adds the ``unit`` each row of the usage, deploys and clients follows, once per history:
    mapping them at every replayed instant re-joined every row with the unit map."""
    units = _unit_map(h)
    for name in ("usage", "deploys", "clients"):
        frame = getattr(h, name)
        if "unit" not in frame:
            frame["unit"] = (_map_units(frame, units).to_numpy(dtype=object) if len(frame)
                             else pd.Series([], dtype=object))
    if h.usage_ids is None:
        # Every instant filters and groups usage by unit and by repository: the strings are
        # hashed here, once, and the instants work on numbers only.
        u = h.usage
        unit_ids, h.usage_units = factorize_pairs(u["repository"].to_numpy(dtype=object),
                                                  u["unit"].to_numpy(dtype=object))
        repo_ids, h.usage_repos = pd.factorize(u["repository"])
        # In order of first event, so that an instant's rows are a prefix (every statistic
        # of them is a count, a sum of whole counts or an extreme: the order changes none).
        order = np.argsort(u["first_at"].to_numpy(dtype=float), kind="stable")
        h.usage_ids = pd.DataFrame({
            "unit_id": unit_ids[order], "repo_id": repo_ids[order],
            **{col: u[col].to_numpy()[order] for col in (
                "count", "first_at", "last_at", "day", "is_use", "is_scan")}})
    return h


def alive_units(h: History, now: float) -> pd.DataFrame:
    """Manifests alive at ``now`` that are decided on their own (not children, not referrers)."""
    cached = h.alive_cache.get(now)
    if cached is None:
        if len(h.alive_cache) >= 4:
            h.alive_cache.pop(next(iter(h.alive_cache)))
        cached = h.alive_cache[now] = _alive_units(h, now)
    return cached.copy()


def _manifest_tops(h: History) -> tuple[pd.DataFrame, np.ndarray]:
    """The manifests in a stable (repository, digest) order, whatever the database returned
    (PostgreSQL reorders updated rows), and for each the row of the unit it follows (-1 when
    it follows none): structural, so found once per history."""
    if h.manifest_tops is None:
        m = h.manifests.sort_values(["repository", "digest"], kind="stable")
        units = _unit_map(h)
        keys = list(rows(m, "repository", "digest"))
        where = {key: i for i, key in enumerate(keys)}
        tops = np.array([-1 if (top := units.get(key)) is None or top == key
                         else where.get(top, -1) for key in keys], dtype=np.int64)
        h.manifest_tops = (m, tops)
    return h.manifest_tops


def _alive_units(h: History, now: float) -> pd.DataFrame:
    m, tops = _manifest_tops(h)
    deleted = m["deleted_at"].to_numpy(dtype=float)
    alive = (m["first_seen"].to_numpy(dtype=float) <= now) & (
        np.isnan(deleted) | (deleted > now))
    # A member follows its unit while the unit is alive; otherwise it is decided on its own.
    follows = alive & (tops >= 0) & alive[np.maximum(tops, 0)]
    own_rows = alive & ~follows
    own = m[own_rows].copy()
    # A unit's bytes include what moves with it (platform manifests, signatures).
    size = np.nan_to_num(m["total_bytes"].to_numpy(dtype=float, na_value=np.nan), nan=0.0)
    extra = np.bincount(tops[follows], weights=size[follows], minlength=len(m))
    count = np.bincount(tops[follows], minlength=len(m))
    own["bytes"] = own["total_bytes"].astype(float).fillna(0.0).to_numpy() + extra[own_rows]
    own["members"] = count[own_rows]
    # Registry events carry no layer sizes: until a scan reads them the size is unknown, and
    # "bytes" (0 then) must not be shown or counted as a real zero.
    own["size_known"] = own["total_bytes"].notna().to_numpy(dtype=bool)
    return own.reset_index(drop=True)


def used_in_window(h: History, start: float, end: float) -> set[tuple[str, str]]:
    """Units used in (start, end]: a use-class pull, a deploy, or a pod running it."""
    units = _unit_map(h)
    used: set[tuple[str, str]] = set()
    # Pulls through the numeric usage: its unit ids already name (repository, unit).
    with_unit_columns(h)
    assert h.usage_ids is not None and h.usage_units is not None
    u = h.usage_ids
    w = (u["is_use"].to_numpy(dtype=bool) & (u["last_at"].to_numpy() > start)
         & (u["first_at"].to_numpy() <= end))
    pulled = h.usage_units[np.unique(u["unit_id"].to_numpy()[w])]
    used.update(zip(pulled.get_level_values(0).to_numpy(dtype=object),
                    pulled.get_level_values(1).to_numpy(dtype=object), strict=True))
    d = h.deploys[(h.deploys["time"] > start) & (h.deploys["time"] <= end)]
    d = d[d["digest"].notna()]
    r = h.running[(h.running["taken_at"] > start) & (h.running["taken_at"] <= end)]
    for frame in (d, r):
        if frame.empty:
            continue
        pairs = frame[["repository", "digest"]].drop_duplicates()
        for key in rows(pairs, "repository", "digest"):
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
    return {units.get(k, k) for k in rows(refs, "repository", "digest")}


def _tag_keys(h: History) -> tuple[np.ndarray, pd.MultiIndex, list[tuple[str, str]]]:
    if h.tag_keys is None:
        repos = h.tags["repository"].to_numpy(dtype=object)
        digests = h.tags["digest"].to_numpy(dtype=object)
        ids, index = factorize_pairs(repos, digests)
        h.tag_keys = (ids, index, list(zip(index.get_level_values(0).to_numpy(dtype=object),
                                           index.get_level_values(1).to_numpy(dtype=object),
                                           strict=True)))
    return h.tag_keys


def tag_spans(h: History, now: float) -> tuple[pd.DataFrame, dict[tuple[str, str], float]]:
    """Per manifest tagged at or before ``now`` (index: repository, digest): ``first`` tagging,
    ``gone``, the latest end of one of its taggings (NaN while every one is open) and
    ``newest``, the latest start of a tagging still on it (NaN when none is); and ``newest``
    as a dict of the manifests tagged at ``now``. Grouped by the pairs numbered once per
    history rather than by the two string columns at every instant."""
    ids, index, pairs = _tag_keys(h)
    vf = h.tags["valid_from"].to_numpy(dtype=float)
    vt = h.tags["valid_to"].to_numpy(dtype=float)
    ever = (vf <= now) & (ids >= 0)
    live = ever & (np.isnan(vt) | (vt > now))
    k = len(index)
    first = np.full(k, np.inf)
    np.minimum.at(first, ids[ever], vf[ever])
    gone = np.full(k, np.nan)
    np.fmax.at(gone, ids[ever], vt[ever])  # fmax: an open tagging (NaN) ends nothing
    newest = np.full(k, -np.inf)
    np.maximum.at(newest, ids[live], vf[live])
    seen = np.bincount(ids[ever], minlength=k) > 0
    tagged = np.bincount(ids[live], minlength=k) > 0
    spans = pd.DataFrame({"first": first[seen], "gone": gone[seen],
                          "newest": np.where(tagged, newest, np.nan)[seen]},
                         index=index[seen])
    spans.index.names = ["repository", "unit"]
    now_tagged = np.flatnonzero(tagged)
    return spans, dict(zip([pairs[i] for i in now_tagged], newest[now_tagged].tolist(),
                           strict=True))


def current_tags(h: History, now: float) -> dict[tuple[str, str], list[str]]:
    """The tags on each manifest at ``now``, sorted. Shared by the callers at one instant:
    read, never changed."""
    cached = h.tags_cache.get(now)
    if cached is None:
        if len(h.tags_cache) >= 2:
            h.tags_cache.pop(next(iter(h.tags_cache)))
        cached = h.tags_cache[now] = _current_tags(h, now)
    return cached


def _current_tags(h: History, now: float) -> dict[tuple[str, str], list[str]]:
    tg = h.tags
    live = ((tg["valid_from"] <= now) & (tg["valid_to"].isna() | (tg["valid_to"] > now))
            ).to_numpy(dtype=bool)
    out: dict[tuple[str, str], list[str]] = {}
    ids, _, pairs = _tag_keys(h)
    if (ids >= 0).all():  # the (repository, digest) tuples made once per history
        for i, tag in zip(ids[live].tolist(), tg["tag"].to_numpy(dtype=object)[live],
                          strict=True):
            out.setdefault(pairs[i], []).append(tag)
    else:
        for repo, tag, digest in rows(tg[live], "repository", "tag", "digest"):
            out.setdefault((repo, digest), []).append(tag)
    for v in out.values():
        v.sort()
    return out
