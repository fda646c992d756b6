"""The distinct-real-clients features, on SQLite and PostgreSQL: values on a hand-built history
and no look into the future (a client first seen after ``now`` is not counted)."""

from __future__ import annotations

import pandas as pd

from recommender.collector.clients import record_clients
from recommender.features import build_features, features_at, load_history
from recommender.store import Store

from .builders import History, at, digest

_COLS = ["clients", "new_clients_30", "new_clients_90"]


def _pull(store: Store, repo: str, d: str, when: float, *hosts: str) -> None:
    """Use-class pulls by ``hosts`` at ``when``, recorded as the writer records them."""
    with store.begin() as conn:
        record_clients(conn, [(repo, d, "pull", "use", f"{h}:4{i:04d}", at(when))
                              for i, h in enumerate(hosts)])


def _values(frame: pd.DataFrame, d: str) -> list[float]:
    return [float(v) for v in frame.loc[frame["digest"] == d, _COLS].iloc[0]]


def _history(store: Store) -> tuple[str, str, str, str]:
    h = History(store)
    base = h.push("base", "b1", 0, "1.0")
    build = h.push("app", "c1", 0, "sha-1234567")
    idx = h.push("multi", "i1", 0, "v1", is_index=True)
    child = digest("multi/child")
    h.child("multi", idx, child)
    _pull(store, "base", base, 5, "10.0.0.1", "10.0.0.2", "10.0.0.3")
    _pull(store, "base", base, 50, "10.0.0.4", "10.0.0.1")  # .1 again: still one client
    _pull(store, "base", base, 85, "10.0.0.5")
    _pull(store, "base", base, 120, "10.0.0.6", "10.0.0.7")  # after now=100
    _pull(store, "app", build, 1, "10.0.0.1")
    # A client of the index's platform manifest is a client of the index, counted once.
    _pull(store, "multi", child, 20, "10.0.0.8")
    _pull(store, "multi", idx, 30, "10.0.0.8", "10.0.0.9")
    return base, build, idx, child


def test_client_features_count_distinct_hosts_as_of_now(store: Store) -> None:
    base, build, idx, _ = _history(store)
    with store.connect() as conn:
        f = build_features(conn, now=at(100))
    assert _values(f, base) == [5.0, 1.0, 2.0]  # .1-.5 by day 100; .5 at 85; .4 and .5 in 90 d
    assert _values(f, build) == [1.0, 0.0, 0.0]
    assert _values(f, idx) == [2.0, 0.0, 2.0]
    with store.connect() as conn:
        later = build_features(conn, now=at(125))
    assert _values(later, base) == [7.0, 2.0, 4.0]  # .4 (50), .5, .6, .7 within 90 d


def test_a_client_first_seen_after_now_is_not_counted(store: Store) -> None:
    base, build, idx, _ = _history(store)
    with store.connect() as conn:
        until_now = features_at(load_history(conn, until=at(100)), at(100))
        wide = load_history(conn, until=at(200))
    replayed = features_at(wide, at(100))
    for d in (base, build, idx):
        assert _values(replayed, d) == _values(until_now, d)
    # Moving a later client's first pull to before now changes the figures (the test can fail).
    _pull(store, "base", base, 99, "10.0.0.7")
    with store.connect() as conn:
        assert _values(build_features(conn, now=at(100)), base) == [6.0, 2.0, 3.0]


def test_no_clients_table_rows_give_zeros(store: Store) -> None:
    h = History(store)
    d = h.push("app", "lonely", 0, "v1")
    h.pull("app", d, 3)  # a rollup without a recorded client (e.g. a store not backfilled)
    with store.connect() as conn:
        f = build_features(conn, now=at(10))
    assert _values(f, d) == [0.0, 0.0, 0.0]
