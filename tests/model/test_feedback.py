"""People's verdicts: training data known at the training instant, and a denial keeps the
unit out of the next suggestions."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update

from recommender import config as config_mod
from recommender import decisions
from recommender.recommend import Suggestion, explain, suggest
from recommender.store import Store
from recommender.store import tables as t
from recommender.training import read_feedback

from .builders import History, at


def _config(tmp_path: Path) -> config_mod.Config:
    path = tmp_path / "tagwarden.toml"
    path.write_text('[[team]]\nname = "ci"\nrepositories = ["ci/*"]\nchannel = "C1"\n'
                    'approvers = ["U1"]\ncool_off = "1d"\n')
    return config_mod.load(path, env={})


def _item(repo: str, d: str) -> Suggestion:
    return Suggestion(repository=repo, digest=d, tags=[], score=0.9, suggested=True,
                      reclaimable_bytes=None, reasons=["idle"], blocked_by=[],
                      batch=f"{repo}::untagged", kind="untagged")


def test_feedback_is_what_was_decided_by_then(store: Store, tmp_path: Path) -> None:
    """A denial decided after ``T`` is not training data at ``T`` (a backtest's leak)."""
    cfg = _config(tmp_path)
    h = History(store)
    denied_late = h.push("ci/a", "late", 0)
    denied_early = h.push("ci/b", "early", 0)
    executed = h.push("ci/c", "gone", 0)
    late, early, done = (decisions.record_batches(store, [_item(r, d)], now=at(100), config=cfg)[0]
                         for r, d in (("ci/a", denied_late), ("ci/b", denied_early),
                                      ("ci/c", executed)))
    decisions.deny(store, batch_id=early.id, user_id="U1", now=at(105))
    decisions.deny(store, batch_id=late.id, user_id="U1", now=at(150))
    decisions.approve(store, batch_id=done.id, user_id="U1", now=at(101))
    with store.begin() as conn:  # the executor's record of the deletion, two weeks later
        conn.execute(update(t.batch_items).where(t.batch_items.c.batch_id == done.id)
                     .values(state="deleted", finished_at=at(115)))

    def known(day: float) -> set[tuple[str, str, str]]:
        with store.connect() as conn:
            return {(f.repository, f.digest, f.verdict) for f in read_feedback(conn,
                                                                               until=at(day))}

    assert known(104) == set()  # all three were suggested at day 100, none decided yet
    assert known(110) == {("ci/b", denied_early, "denied")}
    assert known(120) == {("ci/b", denied_early, "denied"), ("ci/c", executed, "executed")}
    assert known(150) == known(120) | {("ci/a", denied_late, "denied")}
    # The verdict is about the suggestion: its features are taken as of the suggestion.
    with store.connect() as conn:
        assert {f.at for f in read_feedback(conn, until=at(150))} == {at(100)}


def test_a_denial_keeps_the_unit_out_of_suggestions_for_the_quiet_period(
        store: Store, tmp_path: Path) -> None:
    """A person said "still needed": ``suggest`` and ``why`` say so until ``deny_quiet`` ends."""
    cfg = _config(tmp_path)
    h = History(store)
    image = h.push("ci/a", "old", 0)
    sig = h.push("ci/a", "old-sig", 0, f"sha256-{image.split(':')[1]}.sig")
    other = h.push("ci/a", "other", 0)

    def item(day: float) -> Suggestion:
        found = {s.digest: s for s in suggest(store, cfg, now=at(day), include_all=True)}
        assert found[other].suggested  # rules-only: idle for more than twice the horizon
        return found[image]

    proposed = item(400)
    assert proposed.suggested and proposed.members == [sig]
    [batch] = decisions.record_batches(store, [proposed], now=at(400), config=cfg)
    decisions.deny(store, batch_id=batch.id, user_id="U1", now=at(401), reason="we bisect")
    kept = ("kept by a person: denied by U1 on 2027-02-06 (we bisect); not proposed again "
            "before 2027-03-08")
    assert item(400.5).suggested  # the past does not know the denial yet
    assert (item(402).suggested, item(402).blocked_by) == (False, [kept])
    why = explain(store, cfg, repository="ci/a", digest=image, now=at(402))
    assert why["suggested"] is False and why["blocked_by"] == [kept]
    member = explain(store, cfg, repository="ci/a", digest=sig, now=at(402))
    assert member["blocked_by"] == [f"decided with {image.split(':')[1][:12]}: {kept}"]
    assert item(430.9).blocked_by == [kept]
    assert item(431).suggested  # the 30-day quiet is over: proposed again
