"""The whole feedback loop: posted to Slack, denied there with a signed click and the Deny
modal, then the next training learns from it and is promoted, and the next suggestion does
not propose the denied manifests again and says who kept them (``why`` too)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.posting import post_suggestions
from recommender import decisions
from recommender.model import current_model, train
from recommender.recommend import explain, suggest
from recommender.store import Store
from tests.model import synth
from tests.model.builders import at

from .conftest import Bot
from .helpers import TOKEN, click_payload, form, post_signed, view_payload

REPO = "ci/app0"


def _extra(tmp_path: Path) -> str:
    return (f'[model]\ndir = "{tmp_path / "models"}"\nsnapshot_every = "14d"\n'
            '[[team]]\nname = "ci"\nrepositories = ["ci/*"]\nchannel = "C0CI"\n'
            'approvers = ["U0ALICE"]\n')


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # training: one backend
def test_denied_in_slack_then_retrained_and_not_proposed_again(
        bot_factory: Callable[..., Bot], store: Store, tmp_path: Path) -> None:
    bot = bot_factory(extra=_extra(tmp_path))
    synth.generate(store)
    first = train(store, bot.config, now=at(200))
    assert first.promoted
    # The daily job: suggest, record and post the batches of REPO.
    bot.clock.now = at(200)
    proposed = [s for s in suggest(store, bot.config, now=at(200), repository_glob=REPO)
                if s.suggested]
    assert len(proposed) > 10
    report = post_suggestions(store, bot.config, proposed, now=at(200),
                              client=WebClient(token=TOKEN, base_url=bot.fake.api_url))
    assert report.posted and sorted(report.posted) == sorted(report.recorded)
    denied = {i.digest for b in report.posted for i in decisions.get_batch(store, b).items}

    # A person denies every batch in Slack: the button opens the modal, the modal says why.
    bot.clock.now = at(200.1)
    for n, batch_id in enumerate(report.posted, start=1):
        batch = decisions.get_batch(store, batch_id)
        body = form(click_payload("tw_deny", batch_id, channel="C0CI",
                                  message_ts=batch.posted_ts or ""))
        assert post_signed(bot.events_url, body).status_code == 200
        bot.fake.wait_for("views.open", n)
        values = {"reason": {"reason": {"type": "plain_text_input",
                                        "value": "we bisect these"}}}
        submitted = form(view_payload("tw_deny_reason", batch_id, values))
        assert post_signed(bot.events_url, submitted).status_code == 200
        bot.fake.wait_for("chat.update", n)
    assert {decisions.get_batch(store, b).state for b in report.posted} == {"denied"}
    assert not bot.fake.calls("chat.postEphemeral")

    # The next weekly training reads the denials (read_feedback) and is promoted.
    second = train(store, bot.config, now=at(214))
    assert second.promoted and second.model_id != first.model_id
    promoted = current_model(store)
    assert promoted is not None and promoted.id == second.model_id
    # The next suggestion does not propose them again, and says who kept them.
    items = {s.digest: s for s in suggest(store, bot.config, now=at(214),
                                          repository_glob=REPO, include_all=True)}
    kept = "kept by a person: denied by U0ALICE on 2026-07-20 (we bisect these); " \
           "not proposed again before 2026-08-19"
    units = [d for d in denied if d in items]
    assert len(units) == len(proposed)
    assert {items[d].model_id for d in units} == {second.model_id}  # scored by the new model
    assert not any(items[d].suggested for d in units)
    assert all(kept in items[d].blocked_by for d in units)
    assert any(s.suggested for d, s in items.items() if d not in denied)  # others still are
    why = explain(store, bot.config, repository=REPO, digest=units[0], now=at(214))
    assert why["suggested"] is False and kept in why["blocked_by"]
    assert json.dumps(why, default=str)  # printable as `why --json` prints it
