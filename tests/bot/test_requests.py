"""Requests reach the bot only when Slack signed them: forged, unsigned, stale → 401."""

from __future__ import annotations

import time

import httpx

from recommender import decisions

from .conftest import Bot
from .helpers import click_payload, form, post_signed, sign


def test_signed_click_is_acknowledged(bot: Bot) -> None:
    batch = bot.new_batch(1)
    body = form(click_payload("tw_approve", batch.id, response_url=bot.fake.response_url()))
    resp = post_signed(bot.events_url, body)
    assert resp.status_code == 200
    bot.fake.wait_for("chat.update")


def test_forged_unsigned_and_stale_requests_are_refused(bot: Bot) -> None:
    batch = bot.new_batch(1)
    body = form(click_payload("tw_approve", batch.id))
    forged = httpx.post(bot.events_url, content=body,
                        headers=sign(body, secret="not-the-signing-secret"))
    unsigned = httpx.post(bot.events_url, content=body,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    stale = post_signed(bot.events_url, body, timestamp=int(time.time()) - 6 * 60)
    tampered_headers = sign(body)
    tampered = httpx.post(bot.events_url, content=body.replace("U0ALICE", "U0MALLORY"),
                          headers=tampered_headers)
    assert [r.status_code for r in (forged, unsigned, stale, tampered)] == [401] * 4
    time.sleep(0.3)  # nothing may run behind a refused request
    assert decisions.get_batch(bot.store, batch.id).state == "pending"
    assert not bot.fake.calls("chat.update")
    assert not bot.fake.calls("chat.postEphemeral")


def test_click_from_another_workspace_is_refused(bot: Bot) -> None:
    batch = bot.new_batch(1)
    body = form(click_payload("tw_approve", batch.id, team="T0ELSEWHERE"))
    resp = post_signed(bot.events_url, body)
    assert resp.status_code == 403
    time.sleep(0.3)
    assert decisions.get_batch(bot.store, batch.id).state == "pending"
    assert not bot.fake.calls("chat.update")
