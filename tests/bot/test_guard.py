"""What Bolt answered with a 500 on /slack/events: 401 unsigned, 400 malformed, 413 too big.

Each request is one a real sender could make: a timestamp that is not an integer, a body far
over any Slack payload, a signed body that is not a JSON object. None reaches a listener.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from recommender import decisions

from .conftest import Bot
from .helpers import click_payload, form, sign


def _post(bot: Bot, body: bytes | str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(bot.events_url, content=body, headers=headers, timeout=30)


def _nothing_happened(bot: Bot, batch_id: str) -> None:
    time.sleep(0.3)  # nothing may run behind a refused request
    assert decisions.get_batch(bot.store, batch_id).state == "pending"
    assert not bot.fake.calls("chat.update")
    assert not bot.fake.calls("chat.postEphemeral")


@pytest.mark.parametrize("stamp", ["abc", "1e3", "12.5", "-5", "99999999999999999999"])
def test_a_timestamp_that_is_not_a_unix_time_is_401(bot: Bot, stamp: str) -> None:
    batch = bot.new_batch(1)
    body = form(click_payload("tw_approve", batch.id))
    headers = {**sign(body), "X-Slack-Request-Timestamp": stamp}
    resp = _post(bot, body, headers)
    assert resp.status_code == 401, resp.text
    assert "X-Slack-Request-Timestamp" in resp.json()["error"]
    _nothing_happened(bot, batch.id)


def test_an_unsigned_5_mb_body_is_refused_before_it_is_read(bot: Bot) -> None:
    body = b"payload=" + b"x" * (5 << 20)
    resp = _post(bot, body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 413
    assert "over the limit" in resp.json()["error"]


def test_a_big_body_without_a_length_is_refused_as_it_comes(bot: Bot) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(80):  # 5 MB in 64 kB chunks, no Content-Length
            yield b"x" * 65536

    resp = httpx.post(bot.events_url, content=chunks(), timeout=30,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 413


@pytest.mark.parametrize(("body", "content_type"), [
    ("this is not json", "application/json"),
    ("payload=[]", "application/x-www-form-urlencoded"),
    ("payload=%7B", "application/x-www-form-urlencoded"),
    ("{", "application/x-www-form-urlencoded"),
    ("{", "application/json"),
    ("null", "application/json"),
    ("[1, 2]", "application/json"),
])
def test_a_signed_malformed_payload_is_400_with_a_json_error(
    bot: Bot, body: str, content_type: str,
) -> None:
    batch = bot.new_batch(1)
    resp = _post(bot, body, {**sign(body), "Content-Type": content_type})
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]
    _nothing_happened(bot, batch.id)


def test_the_same_malformed_payloads_unsigned_or_forged_are_401(bot: Bot) -> None:
    for body in ("this is not json", "payload=[]", "{", "null"):
        unsigned = _post(bot, body, {"Content-Type": "application/json"})
        forged = _post(bot, body, {**sign(body, secret="not-the-secret"),
                                   "Content-Type": "application/json"})
        assert (unsigned.status_code, forged.status_code) == (401, 401), body


def test_a_signed_click_still_goes_through(bot: Bot) -> None:
    batch = bot.new_batch(1)
    body = form(click_payload("tw_approve", batch.id, response_url=bot.fake.response_url()))
    assert _post(bot, body, sign(body)).status_code == 200
    bot.fake.wait_for("chat.update")
