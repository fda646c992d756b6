"""Features as of an instant, on SQLite and PostgreSQL: figures, and no look into the future."""

from __future__ import annotations

import pandas as pd

from recommender.features import NEVER, build_features, features_at, load_history
from recommender.store import Store

from .builders import History, at


def _row(frame: pd.DataFrame, digest: str) -> pd.Series:
    return frame[frame["digest"] == digest].iloc[0]


def test_features_count_use_deploys_pods_and_tags(store: Store) -> None:
    h = History(store)
    a = h.push("app", "a", 0, "v1.0.0")
    b = h.push("app", "b", 10, "v1.1.0", "latest")
    c = h.push("app", "c", 20, "sha-3f2a9c1")
    h.tag("app", "latest", c, 20)
    for day in range(0, 60, 7):
        h.pull("app", a, day + 0.5)
    h.pull("app", b, 15, n=4)
    h.pull("app", b, 15.2, usage="scanner")
    h.deploy("app", b, 12)
    h.pods(30, [("app", b)])
    with store.connect() as conn:
        f = build_features(conn, now=at(40))
    ra, rb, rc = _row(f, a), _row(f, b), _row(f, c)
    assert ra["uses_7"] == 1 and ra["uses_90"] == 6 and ra["gap_max_days"] == 7
    assert ra["days_since_use"] == 4.5 and ra["newer_versions"] == 1
    assert rb["uses_30"] == 4 and rb["scanner_30"] == 1 and rb["running"] == 1
    assert rb["prod_deploys"] == 1 and rb["days_since_prod_deploy"] == 28
    assert rb["is_latest_release"] == 1 and list(rb["tags"]) == ["v1.1.0"]
    assert rc["days_since_use"] == NEVER and rc["idle_days"] == 20
    assert sorted(rc["tags"]) == ["latest", "sha-3f2a9c1"] and rc["newer_pushes"] == 0
    assert ra["newer_pushes"] == 2


def test_nothing_after_now_changes_the_features(store: Store) -> None:
    """Leakage: events after ``now`` (uses, tags, deploys, pods, deletes) are invisible."""
    h = History(store)
    a = h.push("app", "a", 0, "v1.0.0")
    b = h.push("app", "b", 5, "v1.1.0")
    h.pull("app", a, 3)
    h.pull("app", a, 30.2)  # same day as now, before it
    with store.connect() as conn:
        before = build_features(conn, now=at(30.5))
    # Afterwards: the rest of that day, and later days.
    h.pull("app", a, 30.9, n=50)
    h.pull("app", b, 31)
    h.deploy("app", b, 32)
    h.pods(33, [("app", a)])
    h.tag("app", "latest", b, 34)
    h.push("app", "c", 35, "v2.0.0")
    h.delete("app", a, 36)
    with store.connect() as conn:
        after = build_features(conn, now=at(30.5))
        # The same instant from a history loaded up to a later time: identical too.
        replay = features_at(load_history(conn, until=at(60)), at(30.5))
    cols = [c for c in before.columns if c != "tags"]
    pd.testing.assert_frame_equal(before[cols], after[cols])
    pd.testing.assert_frame_equal(before[cols], replay[cols])
    assert _row(before, a)["uses_30"] == 2  # the same-day pull before now counts


def test_retagging_an_old_digest_resets_its_tag_age(store: Store) -> None:
    h = History(store)
    old = h.push("app", "old", 0, "build-1")
    h.tag("app", "v2.0.0", old, 50)  # promotion
    with store.connect() as conn:
        f = build_features(conn, now=at(52))
    row = _row(f, old)
    assert row["age_days"] == 52 and row["tag_age_days"] == 2


def test_index_children_count_as_use_of_the_index(store: Store) -> None:
    h = History(store)
    idx = h.push("app", "idx", 0, "v1.0.0", is_index=True, size=1000)
    amd = h.push("app", "amd64", 0, size=30_000_000)
    arm = h.push("app", "arm64", 0, size=20_000_000)
    h.child("app", idx, amd)
    h.child("app", idx, arm)
    h.pull("app", arm, 10)
    with store.connect() as conn:
        f = build_features(conn, now=at(20))
    assert list(f["digest"]) == [idx]  # children are not units of their own
    row = _row(f, idx)
    assert row["days_since_use"] == 10 and row["bytes"] == 50_001_000
