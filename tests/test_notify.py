"""The notifier recommender posts through: found by entry point, or none that says why."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recommender import config as config_mod
from recommender.errors import ConfigError
from recommender.notify import ENTRY_POINT_GROUP, NoNotifier, load_notifier
from recommender.store import Store

NOW = datetime(2026, 3, 2, tzinfo=UTC)


def test_the_slack_bot_is_found_through_its_entry_point() -> None:
    notifier = load_notifier(config_mod.load(None, env={}))
    assert f"{type(notifier).__module__}:{type(notifier).__name__}" == "bot.notify:SlackNotifier"
    assert notifier.off_reason() == "slack.bot_token (SLACK_BOT_TOKEN) is not set"
    with_token = load_notifier(config_mod.load(None, env={"SLACK_BOT_TOKEN": "xoxb-1"}))
    assert with_token.off_reason() is None


def test_without_a_notifier_nothing_is_posted_and_every_attempt_says_why(
        sqlite_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("recommender.notify.entry_points", lambda group: [])
    notifier = load_notifier(config_mod.load(None, env={"SLACK_BOT_TOKEN": "xoxb-1"}))
    assert isinstance(notifier, NoNotifier)
    reason = f"no notifier is installed (entry point group {ENTRY_POINT_GROUP})"
    assert notifier.off_reason() == reason
    with pytest.raises(ConfigError, match="Slack is off: no notifier is installed"):
        notifier.post_suggestions(sqlite_store, [], now=NOW)
    with pytest.raises(ConfigError, match="Slack is off"):
        notifier.digest(sqlite_store, team="payments", now=NOW, post=False)
    assert notifier.publish_results(sqlite_store, now=NOW) == []
    parts = notifier.server_parts(sqlite_store, clock=lambda: NOW)
    assert parts.status() == f"off: {reason}" and not parts.ready() and not parts.routes
