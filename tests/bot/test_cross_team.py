"""Two teams: one team's approver decides nothing on the other team's batches, through the
buttons (signed clicks to the real Bolt app) nor through a modal's submission; and nobody
decides anything from another workspace. Every refusal leaves the store as it was and tells
the user, only them, why."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from recommender import decisions
from recommender.store import tables as t

from .conftest import Bot
from .helpers import Suggestion, click_payload, digest, form, post_signed, view_payload

SEARCH_TEAM = """
[[team]]
name = "search"
repositories = ["search/*"]
channel = "C0SEARCH"
approvers = ["U0SAM"]
cool_off = "24h"
"""
BUTTONS = ("tw_approve", "tw_deny", "tw_snooze", "tw_review")


@pytest.fixture
def two_teams(bot_factory: Callable[..., Bot]) -> Bot:
    bot = bot_factory(extra=SEARCH_TEAM)
    assert [team.name for team in bot.config.teams] == ["search", "payments"]
    return bot


def _search_batch(bot: Bot) -> decisions.BatchRecord:
    [batch] = decisions.record_batches(
        bot.store, [Suggestion("search/api", digest(100 + n), [f"build-{n}"]) for n in range(2)],
        now=bot.clock(), config=bot.config)
    decisions.set_posted(bot.store, batch_id=batch.id, channel="C0SEARCH",
                         ts="1700000100.000100", now=bot.clock())
    return decisions.get_batch(bot.store, batch.id)


def _decisions_state(bot: Bot) -> list[list[dict[str, Any]]]:
    """Everything a decision can change (the audit log aside, which records refusals)."""
    with bot.store.connect() as conn:
        return [[dict(r) for r in conn.execute(select(table).order_by(*table.primary_key))
                 .mappings()] for table in (t.batches, t.batch_items, t.approvals)]


def _click(bot: Bot, action: str, batch: decisions.BatchRecord, user: str,
           team: str = "T0TAGWARDEN") -> int:
    body = form(click_payload(action, batch.id, user=user, team=team,
                              channel=batch.posted_channel or "", message_ts=batch.posted_ts
                              or "", response_url=bot.fake.response_url()))
    return post_signed(bot.events_url, body).status_code


def _refusals(bot: Bot, count: int) -> list[Any]:
    return bot.fake.wait_for("chat.postEphemeral", count)


@pytest.mark.parametrize(("owner", "stranger", "channel"), [
    ("payments", "U0SAM", "C0PAYMENTS"), ("search", "U0ALICE", "C0SEARCH")])
def test_another_teams_approver_cannot_decide_by_button(two_teams: Bot, owner: str,
                                                        stranger: str, channel: str) -> None:
    bot = two_teams
    batch = bot.new_batch(2) if owner == "payments" else _search_batch(bot)
    before = _decisions_state(bot)
    for action in BUTTONS:
        assert _click(bot, action, batch, stranger) == 200
    refusals = _refusals(bot, len(BUTTONS))
    repo = batch.repository
    assert [(r.args["user"], r.args["channel"]) for r in refusals] == [(stranger, channel)] * 4
    assert all(f"Not allowed: <@{stranger}> is not an approver for {repo} (team {owner})"
               in r.args["text"] for r in refusals)
    assert _decisions_state(bot) == before
    assert not bot.fake.calls("views.open") and not bot.fake.calls("chat.update")
    refused = decisions.list_batches(bot.store)
    assert {b.id: b.state for b in refused}[batch.id] == "pending"


def test_each_teams_own_approver_still_decides(two_teams: Bot) -> None:
    """The control: the refusals above come from the team check, not a broken setup."""
    bot = two_teams
    search = _search_batch(bot)
    _click(bot, "tw_approve", search, "U0SAM")
    bot.fake.wait_for("chat.update")
    assert decisions.get_batch(bot.store, search.id).state == "approved"
    assert not bot.fake.calls("chat.postEphemeral")


def test_another_teams_approver_cannot_decide_through_a_modal(two_teams: Bot) -> None:
    """A submission is re-checked: forged, or from a modal opened by someone else's click."""
    bot = two_teams
    batch = bot.new_batch(3)
    before = _decisions_state(bot)
    keep = [{"text": {"type": "plain_text", "text": "x"}, "value": str(i.id)}
            for i in batch.items[:1]]
    submissions = [
        view_payload("tw_deny_reason", batch.id,
                     {"reason": {"reason": {"type": "plain_text_input", "value": "mine"}}},
                     user="U0SAM"),
        view_payload("tw_review_items", batch.id,
                     {"items-0": {"keep": {"type": "checkboxes", "selected_options": keep}}},
                     user="U0SAM"),
    ]
    for payload in submissions:
        assert post_signed(bot.events_url, form(payload)).status_code == 200
    # A modal has no channel: the refusal is a direct message, which only the user sees.
    told = bot.fake.wait_for("chat.postMessage", 2)
    assert [m.args["channel"] for m in told] == ["U0SAM", "U0SAM"]
    assert all("Not allowed: <@U0SAM> is not an approver for payments/api (team payments)"
               in m.args["text"] for m in told)
    assert _decisions_state(bot) == before
    assert not bot.fake.calls("chat.update")
    refused = [json.loads(r.data) for r in _audit_rows(bot, "click.refused")]
    assert sorted(r["action"] for r in refused) == ["approve_items", "deny"]


def test_a_click_from_another_workspace_is_refused_even_to_the_owner(two_teams: Bot) -> None:
    """``slack.team_id``: a request from another workspace is answered 403 before any
    listener runs, whoever sends it and whatever it asks (cancel included)."""
    bot = two_teams
    batch = bot.new_batch(1)
    decisions.approve(bot.store, batch_id=batch.id, user_id="U0ALICE", now=bot.clock())
    approved = decisions.get_batch(bot.store, batch.id)
    before = _decisions_state(bot)
    for action in ("tw_cancel", "tw_approve", "tw_deny"):
        assert _click(bot, action, approved, "U0ALICE", team="T0OTHER") == 403
    body = form(view_payload("tw_deny_reason", batch.id, {}, user="U0ALICE", team="T0OTHER"))
    assert post_signed(bot.events_url, body).status_code == 403
    assert _decisions_state(bot) == before
    assert not [c for m in ("chat.update", "chat.postEphemeral", "chat.postMessage",
                            "views.open") for c in bot.fake.calls(m)]


def test_another_teams_approver_may_still_cancel(two_teams: Bot) -> None:
    """Cancel only ever stops a deletion: anyone in the workspace may, whatever their team
    (design invariant 2); it is audited with who clicked."""
    bot = two_teams
    batch = bot.new_batch(1)
    decisions.approve(bot.store, batch_id=batch.id, user_id="U0ALICE", now=bot.clock())
    _click(bot, "tw_cancel", decisions.get_batch(bot.store, batch.id), "U0SAM")
    bot.fake.wait_for("chat.update")
    after = decisions.get_batch(bot.store, batch.id)
    assert after.state == "cancelled" and after.decided_by == "U0SAM"


def _audit_rows(bot: Bot, kind: str) -> list[Any]:
    with bot.store.connect() as conn:
        return list(conn.execute(select(t.audit_log).where(t.audit_log.c.kind == kind)
                                 .order_by(t.audit_log.c.seq)))
