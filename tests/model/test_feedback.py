"""People's verdicts as training data: only those known at the training instant."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update

from recommender import config as config_mod
from recommender import decisions
from recommender.recommend import Suggestion
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
