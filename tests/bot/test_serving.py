"""Slack's part of ``tagwarden serve``: started in the background, so that Slack being down,
refusing the token or not configured never keeps the collector from serving."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.notify import SlackNotifier
from bot.serving import SlackStarter
from recommender import decisions
from recommender.config import Config
from recommender.errors import ConfigError
from recommender.server import build_app
from recommender.store import Store
from tests.support.fake_slack import FakeSlack
from tests.support.live_server import LiveServer

from .helpers import Clock, Suggestion, click_payload, digest, form, make_config, post_signed

COLLECTOR_TOKEN = "collector-token"
DEPLOY = {"timestamp": "2026-03-01T00:00:00Z", "image": "r.example/payments/api:v1",
          "environment": "production"}


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _config(tmp_path: Path, api_url: str) -> Config:
    return make_config(tmp_path, api_url, extra=f'[collector]\ntoken = "{COLLECTOR_TOKEN}"\n')


def _post_event(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/events/deploy", content=json.dumps(DEPLOY), timeout=10,
                      headers={"Authorization": f"Bearer {COLLECTOR_TOKEN}"})


def _slack_status(url: str) -> str:
    health = httpx.get(f"{url}/healthz", timeout=5)
    assert health.status_code == 200, health.text  # Slack's state never makes it unhealthy
    return str(health.json()["slack"])


def _wait_status(url: str, wanted: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (status := _slack_status(url)) != wanted:
        assert time.monotonic() < deadline, f"slack stayed {status!r}, expected {wanted!r}"
        time.sleep(0.05)


def _gauge(url: str) -> str:
    lines = [line for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines()
             if line.startswith('tagwarden_notifier_ready{notifier="slack"}')]
    assert len(lines) == 1, lines
    return lines[0].rsplit(" ", 1)[1]


def test_server_parts_send_nothing_before_the_server_starts_and_check_the_secret(
        sqlite_store: Store, fake_slack: FakeSlack, tmp_path: Path) -> None:
    config = _config(tmp_path, fake_slack.api_url)
    parts = SlackNotifier(config).server_parts(sqlite_store, clock=Clock())
    assert [r.path for r in parts.routes] == ["/slack/events"]  # type: ignore[attr-defined]
    assert parts.status() == "starting" and not parts.ready()
    socket = SlackNotifier(config.replace(slack__app_token="xapp-1-test")).server_parts(
        sqlite_store, clock=Clock())
    assert list(socket.routes) == [] and len(socket.lifespans) == 1
    assert fake_slack.calls("auth.test") == []  # Slack is reached in the lifespan, in the back
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        SlackNotifier(config.replace(slack__signing_secret="")).server_parts(
            sqlite_store, clock=Clock())


def test_the_collector_serves_while_slack_is_down_and_slack_comes_up_later(
        sqlite_store: Store, fake_slack: FakeSlack, tmp_path: Path) -> None:
    config = _config(tmp_path, fake_slack.api_url)
    clock = Clock()
    # Slack answers 500 (the client retries nothing on a 5xx) until the fake "recovers".
    fake_slack.fail("auth.test", 500, times=1_000)
    starter = SlackStarter(config, sqlite_store, clock=clock, backoff=(0.1,))
    with LiveServer(build_app(config, sqlite_store, clock=clock,
                              notifier=starter.parts())) as server:
        assert _post_event(server.url).json() == {"accepted": 1}
        _wait_status(server.url, "unreachable, retrying")
        assert _gauge(server.url) == "0.0"
        [batch] = decisions.record_batches(sqlite_store, [Suggestion("payments/api", digest(1))],
                                           now=clock(), config=config)
        decisions.set_posted(sqlite_store, batch_id=batch.id, channel="C0PAYMENTS",
                             ts="1700000001.000100", now=clock())
        click = form(click_payload("tw_approve", batch.id))
        early = post_signed(f"{server.url}/slack/events", click)
        assert early.status_code == 503
        assert early.json()["error"] == "Slack is not ready: unreachable, retrying"

        fake_slack.recover("auth.test")  # Slack is back
        _wait_status(server.url, "ready")
        assert _gauge(server.url) == "1.0"
        assert post_signed(f"{server.url}/slack/events", click).status_code == 200
        fake_slack.wait_for("chat.update")  # the click's follow-up work is done
        assert decisions.get_batch(sqlite_store, batch.id).state == "approved"
        assert _post_event(server.url).status_code == 200
    assert len(fake_slack.calls("auth.test")) >= 3  # it did retry


def test_a_refused_token_leaves_slack_off_and_the_collector_up(
        sqlite_store: Store, fake_slack: FakeSlack, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    config = _config(tmp_path, fake_slack.api_url)
    fake_slack.fail("auth.test", 200, times=1_000)  # {"ok": false}: Slack's verdict on the token
    starter = SlackStarter(config, sqlite_store, clock=Clock(), backoff=(0.05,))
    with LiveServer(build_app(config, sqlite_store, notifier=starter.parts())) as server:
        _wait_status(server.url, "off: Slack refused the bot token (fatal_error)")
        assert _post_event(server.url).status_code == 200
        time.sleep(0.3)
        assert len(fake_slack.calls("auth.test")) == 1  # not retried: retrying changes nothing
    assert "Slack refused the bot token" in caplog.text


def test_without_a_bot_token_slack_events_says_slack_is_not_configured(
        sqlite_store: Store, fake_slack: FakeSlack, tmp_path: Path) -> None:
    config = _config(tmp_path, fake_slack.api_url).replace(slack__bot_token="")
    parts = SlackNotifier(config).server_parts(sqlite_store, clock=Clock())
    with LiveServer(build_app(config, sqlite_store, notifier=parts)) as server:
        answer = httpx.post(f"{server.url}/slack/events", content="{}", timeout=5)
        assert answer.status_code == 503
        assert answer.json()["error"] == ("Slack is not configured: slack.bot_token "
                                          "(SLACK_BOT_TOKEN) is not set")
        assert _slack_status(server.url) == "off: slack.bot_token (SLACK_BOT_TOKEN) is not set"
        assert _gauge(server.url) == "0.0"
    assert fake_slack.calls("auth.test") == []


def test_socket_mode_connects_in_the_background_once_slack_answers(
        sqlite_store: Store, fake_slack: FakeSlack, tmp_path: Path) -> None:
    fake_slack.enable_socket_mode()
    config = _config(tmp_path, fake_slack.api_url).replace(slack__app_token="xapp-1-test")
    clock = Clock()
    fake_slack.fail("auth.test", 503, times=2)  # down twice, then back by itself
    starter = SlackStarter(config, sqlite_store, clock=clock, backoff=(0.05,))
    [batch] = decisions.record_batches(sqlite_store, [Suggestion("payments/api", digest(1))],
                                       now=clock(), config=config)
    decisions.set_posted(sqlite_store, batch_id=batch.id, channel="C0PAYMENTS",
                         ts="1700000001.000100", now=clock())
    with LiveServer(build_app(config, sqlite_store, clock=clock,
                              notifier=starter.parts())) as server:
        assert _post_event(server.url).status_code == 200
        _wait_status(server.url, "ready")
        assert len(fake_slack.calls("auth.test")) == 3
        fake_slack.socket_send({"envelope_id": "env-1", "type": "interactive",
                                "accepts_response_payload": False, "retry_attempt": 0,
                                "payload": click_payload("tw_approve", batch.id)})
        fake_slack.wait_for("chat.update")
        assert decisions.get_batch(sqlite_store, batch.id).state == "approved"
