"""``settled``: whether the guardrails already let a unit through at the previous run.

It is a model input (units released since come back far more often than the settled
backlog), and the idle rule is held to the weekly standard by it. Built histories in the real
store, SQLite and PostgreSQL; the rule's tuning on built rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recommender import config as config_mod
from recommender.features import days, load_history
from recommender.store import Store
from recommender.training import (
    RuleBaseline,
    build_dataset,
    run_every,
    steady_rows,
    tune_idle_rule,
)

from .builders import History, at

CONFIG = config_mod.load(env={})  # keep the last 10 other versions, minimum age 7 days


def _builds(store: Store) -> dict[str, str]:
    h = History(store)
    names = {f"b{i}": h.push("app", f"b{i}", i, f"build-{i}") for i in range(15)}
    # Pushed on day 25: too young at day 30, but it pushes b5 out of the last ten.
    names["b15"] = h.push("app", "b15", 25, "build-15")
    return names


def test_settled_means_eligible_one_run_earlier(store: Store) -> None:
    names = _builds(store)
    with store.connect() as conn:
        h = load_history(conn, until=at(40))
    frame = build_dataset(h, CONFIG, [days(at(30))], 10.0).set_index("digest")
    eligible = {n for n, d in names.items() if frame.loc[d, "eligible"]}
    settled = {n for n, d in names.items() if frame.loc[d, "settled"]}
    assert frame["settled"].dtype == bool
    # b0..b4 were already out of the last ten and old enough at day 23; b5 left it on day 25.
    assert eligible == {f"b{i}" for i in range(6)}
    assert settled == {f"b{i}" for i in range(5)}
    # b15 is not eligible now, and did not exist a run ago.
    assert not frame.loc[names["b15"], "settled"]


def test_snapshots_carry_the_previous_eligibility_as_a_fresh_look_would(store: Store) -> None:
    _builds(store)
    with store.connect() as conn:
        h = load_history(conn, until=at(60))
    every = run_every(CONFIG)
    for times in ([days(at(d)) for d in (9, 16, 23, 30, 37)],  # one run apart: carried
                  [days(at(d)) for d in (12, 30, 31)]):  # not: looked up again each time
        data = build_dataset(h, CONFIG, times, 10.0)
        for t in times:
            fresh = build_dataset(h, CONFIG, [t], 10.0)  # looked up, nothing carried
            got = data[data["at"] == t]
            assert got["digest"].tolist() == fresh["digest"].tolist()
            assert got["settled"].tolist() == fresh["settled"].tolist()
        assert data["settled"].any() and not data["settled"].all()
    assert every == 7.0


def _past(new_used: int) -> pd.DataFrame:
    """Ten weekly snapshots: a settled long-dead backlog, and 200 builds per week just past
    the minimum age (idle 8 to 12 days), ``new_used`` of them used again."""
    frames = []
    for k in range(10):
        backlog = pd.DataFrame({"idle_days": 100.0 + np.arange(5000) % 300, "settled": True,
                                "dead": 1})
        fresh = pd.DataFrame({"idle_days": 8.0 + np.arange(200) % 5, "settled": False,
                              "dead": np.r_[np.zeros(new_used), np.ones(200 - new_used)]})
        frame = pd.concat([backlog, fresh], ignore_index=True)
        frame["at"] = 7.0 * k
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    data["running"] = 0.0
    data["eligible"] = True
    data["bytes"] = 1e8
    data["weight"] = 1.0
    return data


def test_idle_rule_held_to_the_weekly_standard_waits_longer() -> None:
    past = _past(new_used=2)  # 20 of 52,000 rows used: 0.9996 on whole snapshots
    whole = tune_idle_rule(past, 0.999)
    weekly = tune_idle_rule(past, 0.999, every=7.0)
    assert whole.parameter == 7  # the backlog dilutes the fresh builds' returns
    # Among what a weekly run judges again (the fresh builds, 2 of 200 used: 0.99), 7 days
    # fails; 14 days waits until the builds were already judged a run earlier.
    assert weekly.parameter == 14
    again = steady_rows(past, RuleBaseline("idle", 7.0), 7.0)
    fresh = ~past["settled"].to_numpy(dtype=bool)
    assert again[fresh].all()
    # A settled unit is judged again when a run ago it was not idle long enough: idle now
    # at most D + 7 days.
    settled_again = again & ~fresh
    assert (past["idle_days"].to_numpy()[settled_again] <= 14).all()
    # With no fresh returns, the weekly standard costs nothing.
    assert tune_idle_rule(_past(new_used=0), 0.999, every=7.0).parameter == 7


def test_the_rule_alone_has_no_guardrails_to_release_units() -> None:
    past = _past(new_used=2)
    fresh = ~past["settled"].to_numpy(dtype=bool)
    past.loc[fresh, "idle_days"] = 30.0  # released by a guardrail, long unused
    alone = RuleBaseline("idle", 7.0, scope="all")
    # Without guardrails nothing is "released": only crossing D this week counts again.
    again = steady_rows(past, alone, 7.0)
    assert (again == (past["idle_days"].to_numpy() - 7.0 <= 7.0)).all()
    assert not again[fresh].any()
    # Inside the guardrails the same rows are judged again: a guardrail kept them last run.
    assert steady_rows(past, RuleBaseline("idle", 7.0), 7.0)[fresh].all()
