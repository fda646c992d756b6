"""Guardrails: every trap of docs/design.md that applies, on SQLite and PostgreSQL."""

from __future__ import annotations

from recommender import config as config_mod
from recommender.policy import evaluate
from recommender.store import Store

from .builders import History, at, digest

CONFIG = config_mod.load(env={})
SIG_OF = "sha256-{}.sig"


def _short(d: str) -> str:
    return d.split(":")[1][:12]


def _verdicts(store: Store, now: float, config: config_mod.Config = CONFIG
              ) -> dict[str, list[str]]:
    with store.connect() as conn:
        result = evaluate(conn, config, now=at(now))
    return {d: reasons for (_, d), reasons in result.items()}


def test_running_image_is_kept_whatever_its_history(store: Store) -> None:
    """trap 1: lifecycle rules deleted images still used by production."""
    h = History(store)
    builds = [h.push("app", f"b{i}", i, f"build-{i}") for i in range(15)]
    h.pods(30, [("app", builds[0])])
    v = _verdicts(store, 40)
    assert any("running" in r for r in v[builds[0]])
    assert v[builds[1]] == []  # old, not running, out of the last 10: nothing keeps it


def test_index_and_children_are_decided_together(store: Store) -> None:
    """trap 2: multi-arch children deleted while the index is tagged."""
    h = History(store)
    idx = h.push("app", "idx", 0, "latest", is_index=True)
    child = h.push("app", "child", 0)
    h.child("app", idx, child)
    lone = h.push("app", "lone-idx", 0, is_index=True)
    running_child = h.push("app", "rc", 0)
    h.child("app", lone, running_child)
    h.pods(39, [("app", running_child)])
    v = _verdicts(store, 40)
    # Exact lists: an empty one would pass an ``all(...)`` and mean the child is deletable.
    assert v[idx] == ["protected tag: latest"]
    assert v[child] == [f"decided with {_short(idx)}: protected tag: latest"]
    # A running platform manifest keeps its (untagged) index, and so itself.
    assert v[lone] == ["running in a cluster now"]
    assert v[running_child] == [f"decided with {_short(lone)}: running in a cluster now"]


def test_signatures_follow_their_subject(store: Store) -> None:
    """trap 3: signatures orphaned or wrongly deleted."""
    h = History(store)
    kept = h.push("app", "kept", 0, "v1.0.0")
    gone = h.push("app", "gone", 0)
    sig_kept = h.push("app", "sig1", 0, SIG_OF.format(kept.split(":")[1]))
    att = h.push("app", "att", 0, subject=gone, referrer_kind="attestation")
    v = _verdicts(store, 40)
    assert v[kept] == ["keep-last-10: v1.0.0 is the #1 newest version"]
    assert v[sig_kept] == [f"decided with {_short(kept)}: keep-last-10: v1.0.0 is the #1 newest "
                           "version"]
    assert v[gone] == [] and v[att] == []  # proposed together with the subject


def test_a_protected_alias_keeps_every_tag_of_the_digest(store: Store) -> None:
    """traps 4 and 5: keeping 2 of 4 aliases deleted all 4; excluded tags deleted."""
    h = History(store)
    d = h.push("app", "d", 0, "build-1", "sha-3f2a9c1", "feature-x", "stable")
    v = _verdicts(store, 40)
    assert v[d][0] == "protected tag: stable"


def test_keep_last_n_by_semantic_version_not_push_time(store: Store) -> None:
    """trap 9: push order is not version order (a late hotfix of an old line is old)."""
    h = History(store)
    versions = {i: h.push("app", f"v{i}", i, f"v1.{i}.0") for i in range(12)}
    hotfix = h.push("app", "hotfix", 20, "v1.0.1")
    v = _verdicts(store, 40)
    assert v[hotfix] == []  # newest push, but the second-oldest version
    assert v[versions[0]] == [] and v[versions[1]] == []
    assert all(v[versions[i]] for i in range(2, 12))
    assert "keep-last-10: v1.11.0 is the #1 newest version" in v[versions[11]]


def test_production_releases_keep_their_own_last_n(store: Store) -> None:
    """peers 13 and the seed: keep the last 3 production releases, apart from the others."""
    h = History(store)
    prod = [h.push("app", f"p{i}", i, f"v1.{i}.0") for i in range(5)]
    for i, d in enumerate(prod):
        h.deploy("app", d, i + 0.5, environment="production")
    staging = [h.push("app", f"s{i}", 10 + i, f"v2.{i}.0") for i in range(12)]
    for d in staging:
        h.deploy("app", d, 30, environment="staging")
    v = _verdicts(store, 100)
    assert [bool(v[d]) for d in prod] == [False, False, True, True, True]
    assert "keep-last-3: v1.4.0 is the #1 newest production release" in v[prod[4]]
    assert [bool(v[d]) for d in staging] == [False, False] + [True] * 10


def test_recent_production_deploy_and_min_age(store: Store) -> None:
    h = History(store)
    rules = config_mod.load(env={})
    old = [h.push("app", f"o{i}", i, f"v1.{i}.0") for i in range(5)]
    h.deploy("app", old[0], 80)  # a rollback to the oldest release 20 days ago
    young = h.push("app", "young", 97)
    v = _verdicts(store, 100, rules)
    assert any("deployed to production 20 days ago" in r for r in v[old[0]])
    assert any(r.startswith("min age: 3 days") for r in v[young])


def test_promotion_resets_age(store: Store) -> None:
    """trap 10: re-tagging (promotion) should reset the age."""
    h = History(store)
    d = h.push("app", "d", 0)
    h.tag("app", "rc-approved", d, 98)
    assert any(r.startswith("min age: 2 days") for r in _verdicts(store, 100)[d])


def test_policy_globs_and_overrides(store: Store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.toml"
    path.write_text('[[policy]]\nrepositories = ["app"]\nprotected_tags = ["release-*"]\n'
                    'keep_other = 1\nmin_age = "1d"\n')
    cfg = config_mod.load(path, env={})
    h = History(store)
    a = h.push("app", "a", 0, "release-1")
    b = h.push("app", "b", 1, "latest")  # not protected under this rule
    c = h.push("app", "c", 2, "build-9")
    v = _verdicts(store, 40, cfg)
    assert v[a] == ["protected tag: release-1"]
    assert v[b] == [] and v[c] == ["keep-last-1: build-9 is the #1 newest build (by push time)"]


def test_candidates_that_are_not_alive_say_so(store: Store) -> None:
    h = History(store)
    d = h.push("app", "d", 0, "build-1")
    h.delete("app", d, 5)
    with store.connect() as conn:
        out = evaluate(conn, CONFIG, now=at(40), candidates=[("app", d), ("app", digest("x"))])
    assert out[("app", d)] == ["not alive at this time"]


def test_declared_references_keep_what_deployment_files_name(store: Store) -> None:
    """A suspended CronJob's image runs nowhere and is idle, but a file still declares it."""
    from recommender.reference import parse_reference
    from recommender.refs.found import DeclaredRef
    from recommender.refs.store import record

    h = History(store)
    builds = [h.push("team/app", f"b{i}", i, f"build-{i}") for i in range(15)]
    image = f"reg.example.com/team/app@{builds[0]}"
    record(store, {"gitops": [DeclaredRef(image, parse_reference(image), "deploy/cron.yaml:14",
                                          "kubernetes")]}, at=at(20))
    v = _verdicts(store, 40)
    assert "referenced: deploy/cron.yaml:14" in v[builds[0]]
    assert v[builds[1]] == []
