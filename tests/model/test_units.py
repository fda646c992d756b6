"""Suggestions carry their whole unit: an index's platforms, a subject's signatures."""

from __future__ import annotations

from pathlib import Path

from recommender import config as config_mod
from recommender.recommend import suggest
from recommender.store import Store

from .builders import History, at

SIG_OF = "sha256-{}.sig"


def _hex(d: str) -> str:
    return d.split(":")[1]


def test_members_are_an_index_platforms_and_a_subject_signatures(store: Store,
                                                                 tmp_path: Path) -> None:
    cfg = config_mod.load(env={})
    h = History(store)
    idx = h.push("app", "idx", 0, is_index=True)
    amd64, arm64 = h.push("app", "amd64", 0), h.push("app", "arm64", 0)
    h.child("app", idx, amd64)
    h.child("app", idx, arm64)
    gone_child = h.push("app", "s390x", 0)
    h.child("app", idx, gone_child)
    h.delete("app", gone_child, 10)  # deleted: no longer part of what a deletion removes
    idx_sig = h.push("app", "idx-sig", 0, SIG_OF.format(_hex(idx)))
    # A signature of a platform manifest follows the platform, and so the index.
    child_sig = h.push("app", "amd64-sig", 0, SIG_OF.format(_hex(amd64)))
    single = h.push("app", "single", 1)
    single_sig = h.push("app", "single-sig", 1, SIG_OF.format(_hex(single)))
    sbom = h.push("app", "sbom", 1, subject=single, referrer_kind="sbom")
    lone = h.push("app", "lone", 2)
    other = h.push("other", "idx", 0, is_index=True)  # same names, another repository
    other_child = h.push("other", "amd64", 0)
    h.child("other", other, other_child)

    items = {(s.repository, s.digest): s for s in suggest(store, cfg, now=at(400),
                                                         include_all=True)}
    # Members are decided with their unit, never items of their own.
    assert set(items) == {("app", idx), ("app", single), ("app", lone), ("other", other)}
    assert sorted(items[("app", idx)].members) == sorted([amd64, arm64, idx_sig, child_sig])
    assert sorted(items[("app", single)].members) == sorted([single_sig, sbom])
    assert items[("app", lone)].members == []
    assert items[("other", other)].members == [other_child]
    # Every unit is idle for more than twice the horizon: rules-only mode suggests all of them.
    assert all(s.suggested for s in items.values())

