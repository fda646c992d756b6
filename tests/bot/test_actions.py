"""Clicks over HTTP against the real Bolt app: authorization, atomic decisions, the message
updated in place, modals. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select

from recommender import decisions
from recommender.store import tables as t
from tests.support.fake_slack import Recorded

from .conftest import Bot
from .helpers import click_payload, digest, form, post_signed, view_payload


def _audit(bot: Bot, kind: str) -> list[dict[str, object]]:
    with bot.store.connect() as conn:
        return [json.loads(r.data) | {"actor": r.actor} for r in conn.execute(
            select(t.audit_log).where(t.audit_log.c.kind == kind).order_by(t.audit_log.c.seq))]


def _click(bot: Bot, action: str, batch_id: str, user: str = "U0ALICE") -> int:
    body = form(click_payload(action, batch_id, user=user,
                              response_url=bot.fake.response_url()))
    return post_signed(bot.events_url, body).status_code


def _texts(call: Recorded) -> str:
    return json.dumps(call.blocks)


def test_approve_updates_the_message_in_place_with_who_and_when(bot: Bot) -> None:
    batch = bot.new_batch(3)
    assert _click(bot, "tw_approve", batch.id) == 200
    [update] = bot.fake.wait_for("chat.update")
    assert update.args["channel"] == "C0PAYMENTS" and update.args["ts"] == batch.posted_ts
    text = _texts(update)
    assert "Approved by <@U0ALICE>" in text and "tw_cancel" in text and "tw_approve" not in text
    after = decisions.get_batch(bot.store, batch.id)
    assert after.state == "approved" and after.due_at == bot.clock() + after.cool_off


def test_non_approver_is_refused_ephemerally_and_nothing_changes(bot: Bot) -> None:
    batch = bot.new_batch(2)
    assert _click(bot, "tw_approve", batch.id, user="U0MALLORY") == 200
    [refusal] = bot.fake.wait_for("chat.postEphemeral")
    assert refusal.args["user"] == "U0MALLORY" and "Not allowed" in refusal.args["text"]
    assert decisions.get_batch(bot.store, batch.id).state == "pending"
    assert not bot.fake.calls("chat.update")
    [audited] = _audit(bot, "click.refused")
    assert audited["actor"] == "U0MALLORY" and audited["allowed"] is False


def test_user_group_member_may_approve(bot_factory: Callable[..., Bot]) -> None:
    bot = bot_factory(approvers=(), approver_group="S0PAYAPPROVERS")
    batch = bot.new_batch(1)
    assert _click(bot, "tw_approve", batch.id, user="U0CAROL") == 200
    bot.fake.wait_for("chat.update")
    assert bot.fake.calls("usergroups.users.list")[0].args["usergroup"] == "S0PAYAPPROVERS"
    assert decisions.get_batch(bot.store, batch.id).state == "approved"


def test_five_concurrent_approve_clicks_make_one_transition(bot: Bot) -> None:
    batch = bot.new_batch(3)
    with ThreadPoolExecutor(5) as pool:
        codes = list(pool.map(lambda _: _click(bot, "tw_approve", batch.id), range(5)))
    assert codes == [200] * 5
    bot.fake.wait_for("chat.postEphemeral", 4)  # the four late clicks are told
    bot.fake.wait_for("chat.update", 1)
    time.sleep(0.2)
    assert len(bot.fake.calls("chat.update")) == 1
    moved = [a for a in _audit(bot, "decision.approve") if a["changed"]]
    assert len(moved) == 1
    assert decisions.get_batch(bot.store, batch.id).state == "approved"


@pytest.mark.parametrize("min_approvals", [1, 2])
def test_two_approvers_at_once_make_one_transition(bot_factory: Callable[..., Bot],
                                                   min_approvals: int) -> None:
    bot = bot_factory(min_approvals=min_approvals)
    batch = bot.new_batch(2)
    with ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(lambda u: _click(bot, "tw_approve", batch.id, user=u),
                              ["U0ALICE", "U0BOB"]))
    assert codes == [200, 200]
    bot.fake.wait_for("chat.update", min_approvals)
    bot.fake.wait_for("chat.postEphemeral", 1)  # late (1) or "waiting for another" (2)
    assert len([a for a in _audit(bot, "decision.approve") if a["changed"]]) == 1
    after = decisions.get_batch(bot.store, batch.id)
    assert after.state == "approved"
    expected = {"U0ALICE", "U0BOB"} if min_approvals == 2 else {after.approvals[0]}
    assert set(after.approvals) == expected


def test_two_person_rule_needs_two_distinct_approvers(bot_factory: Callable[..., Bot]) -> None:
    bot = bot_factory(min_approvals=2)
    batch = bot.new_batch(2)
    assert _click(bot, "tw_approve", batch.id, user="U0ALICE") == 200
    [first] = bot.fake.wait_for("chat.update")
    assert "(1 of 2)" in _texts(first) and "tw_approve" in _texts(first)
    assert _click(bot, "tw_approve", batch.id, user="U0ALICE") == 200  # same person again
    bot.fake.wait_for("chat.postEphemeral", 2)
    assert decisions.get_batch(bot.store, batch.id).state == "pending"
    assert _click(bot, "tw_approve", batch.id, user="U0BOB") == 200
    updates = bot.fake.wait_for("chat.update", 3)
    assert "tw_cancel" in _texts(updates[-1])
    after = decisions.get_batch(bot.store, batch.id)
    assert after.state == "approved" and set(after.approvals) == {"U0ALICE", "U0BOB"}


def test_anyone_in_the_workspace_may_cancel_during_cooling_off(bot: Bot) -> None:
    batch = bot.new_batch(1)
    _click(bot, "tw_approve", batch.id)
    bot.fake.wait_for("chat.update")
    assert _click(bot, "tw_cancel", batch.id, user="U0DAVE") == 200  # not an approver
    updates = bot.fake.wait_for("chat.update", 2)
    assert "Cancelled by <@U0DAVE>" in _texts(updates[-1])
    assert decisions.get_batch(bot.store, batch.id).state == "cancelled"
    [cancelled] = _audit(bot, "decision.cancel")
    assert cancelled["actor"] == "U0DAVE"


def test_non_approver_may_not_deny_or_snooze(bot: Bot) -> None:
    batch = bot.new_batch(1)
    for action in ("tw_deny", "tw_snooze", "tw_review"):
        assert _click(bot, action, batch.id, user="U0MALLORY") == 200
    bot.fake.wait_for("chat.postEphemeral", 3)
    assert not bot.fake.calls("views.open") and not bot.fake.calls("chat.update")
    assert decisions.get_batch(bot.store, batch.id).state == "pending"
    assert len(_audit(bot, "click.refused")) == 3


def test_snooze(bot: Bot) -> None:
    batch = bot.new_batch(1)
    assert _click(bot, "tw_snooze", batch.id) == 200
    [update] = bot.fake.wait_for("chat.update")
    assert "Snoozed by <@U0ALICE>" in _texts(update)
    after = decisions.get_batch(bot.store, batch.id)
    assert after.state == "snoozed" and after.snoozed_until is not None


def test_deny_opens_a_modal_and_records_the_reason(bot: Bot) -> None:
    batch = bot.new_batch(2)
    assert _click(bot, "tw_deny", batch.id) == 200
    [opened] = bot.fake.wait_for("views.open")
    view = json.loads(opened.args["view"]) if isinstance(opened.args["view"], str) \
        else opened.args["view"]
    assert view["callback_id"] == "tw_deny_reason"
    values = {"reason": {"reason": {"type": "plain_text_input", "value": "demo on Friday"}}}
    body = form(view_payload("tw_deny_reason", batch.id, values))
    assert post_signed(bot.events_url, body).status_code == 200
    [update] = bot.fake.wait_for("chat.update")
    assert "demo on Friday" in _texts(update)
    after = decisions.get_batch(bot.store, batch.id)
    assert after.state == "denied" and after.reason == "demo on Friday"


def test_review_drops_unticked_items_then_approves(bot: Bot) -> None:
    batch = bot.new_batch(3)
    _click(bot, "tw_review", batch.id)
    [opened] = bot.fake.wait_for("views.open")
    view = json.loads(opened.args["view"]) if isinstance(opened.args["view"], str) \
        else opened.args["view"]
    options = view["blocks"][1]["element"]["options"]
    assert len(options) == 3
    keep = options[:2]
    values = {"items-0": {"keep": {"type": "checkboxes", "selected_options": keep}}}
    resp = post_signed(bot.events_url, form(view_payload("tw_review_items", batch.id, values)))
    assert resp.status_code == 200
    bot.fake.wait_for("chat.update")
    after = decisions.get_batch(bot.store, batch.id)
    assert after.state == "approved"
    assert sorted(i.state for i in after.items) == ["approved", "approved", "dropped"]


def test_review_with_nothing_ticked_answers_in_the_modal(bot: Bot) -> None:
    batch = bot.new_batch(2)
    values = {"items-0": {"keep": {"type": "checkboxes", "selected_options": []}}}
    resp = post_signed(bot.events_url, form(view_payload("tw_review_items", batch.id, values)))
    assert resp.status_code == 200
    assert resp.json()["response_action"] == "errors"
    assert decisions.get_batch(bot.store, batch.id).state == "pending"


def test_status_command_answers_ephemerally(bot: Bot) -> None:
    bot.new_batch(2)
    body = ("command=%2Ftagwarden&text=status&team_id=T0TAGWARDEN&user_id=U0ALICE"
            "&channel_id=C0PAYMENTS&trigger_id=1.2.3&response_url="
            + bot.fake.response_url())
    resp = post_signed(bot.events_url, body)
    assert resp.status_code == 200
    answer = resp.json()
    assert answer["response_type"] == "ephemeral"
    assert "1 batches waiting for approval (2 manifests, 620.0 MB)" in answer["text"]


def test_unknown_subcommand_gets_usage(bot: Bot) -> None:
    body = ("command=%2Ftagwarden&text=frobnicate&team_id=T0TAGWARDEN&user_id=U0ALICE"
            "&channel_id=C0PAYMENTS&response_url=" + bot.fake.response_url())
    resp = post_signed(bot.events_url, body)
    assert resp.status_code == 200 and "Usage" in resp.json()["text"]


def _command(bot: Bot, text: str) -> dict[str, object]:
    body = ("command=%2Ftagwarden&text=" + text.replace(" ", "+").replace("@", "%40")
            + "&team_id=T0TAGWARDEN&user_id=U0ALICE&channel_id=C0PAYMENTS&trigger_id=1.2.3"
            "&response_url=" + bot.fake.response_url("cmd"))
    resp = post_signed(bot.events_url, body)
    assert resp.status_code == 200
    return resp.json()


def test_suggest_command_acks_then_answers_through_the_response_url(bot: Bot) -> None:
    # One manifest the default guardrails keep (keep the last 10 versions): nothing to suggest.
    seen = bot.clock() - timedelta(days=30)
    with bot.store.begin() as conn:
        conn.execute(t.manifests.insert().values(
            repository="payments/api", digest=digest(7), size=500, total_bytes=10_500,
            first_seen=seen, last_scanned=seen, is_index=False))
        conn.execute(t.tag_history.insert().values(
            repository="payments/api", tag="build-7", digest=digest(7), valid_from=seen,
            source="scan"))
    ack = _command(bot, "suggest payments/*")
    assert ack["response_type"] == "ephemeral" and "Working on" in str(ack["text"])
    [answer] = bot.fake.wait_for("response_url", timeout=60)
    assert answer.path == "/response/cmd" and answer.args["response_type"] == "ephemeral"
    assert answer.args["text"] == "Nothing to suggest for `payments/*` right now."


def test_why_command_about_an_unknown_digest_answers_one_line(bot: Bot) -> None:
    _command(bot, "why payments/api@sha256:" + "ab" * 32)
    [answer] = bot.fake.wait_for("response_url", timeout=60)
    assert str(answer.args["text"]).startswith("Could not answer: payments/api@sha256:abab")
    _command(bot, "why payments/api")
    answers = bot.fake.wait_for("response_url", 2, timeout=60)
    assert "Expected `<repository>@sha256:<hex>`" in str(answers[-1].args["text"])
