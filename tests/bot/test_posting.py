"""Posting batches to the fake Slack: pacing, 429 with Retry-After, 500 left for next time."""

from __future__ import annotations

import time
from pathlib import Path

from slack_sdk import WebClient

from bot.posting import Poster, post_suggestions
from recommender import decisions
from recommender.store import Store
from tests.support.fake_slack import FakeSlack

from .helpers import T0, TOKEN, Suggestion, digest, make_config


def _client(fake: FakeSlack) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.api_url)


def _suggestions(repos: list[str], per_repo: int = 2) -> list[Suggestion]:
    return [Suggestion(repo, digest(100 * r + n), tags=[f"build-{n}"])
            for r, repo in enumerate(repos) for n in range(per_repo)]


def test_posts_each_new_batch_once_and_remembers_the_message(
        store: Store, fake_slack: FakeSlack, tmp_path: Path) -> None:
    config = make_config(tmp_path, fake_slack.api_url)
    suggestions = _suggestions(["payments/api", "payments/worker"])
    report = post_suggestions(store, config, suggestions, client=_client(fake_slack), now=T0)
    assert len(report.recorded) == 2 and sorted(report.posted) == sorted(report.recorded)
    posts = fake_slack.calls("chat.postMessage")
    assert [p.args["channel"] for p in posts] == ["C0PAYMENTS", "C0PAYMENTS"]
    assert "2 CI builds of payments/" in posts[0].args["text"]
    for batch_id in report.posted:
        batch = decisions.get_batch(store, batch_id)
        assert batch.posted_channel == "C0PAYMENTS" and batch.posted_ts
    again = post_suggestions(store, config, suggestions, client=_client(fake_slack), now=T0)
    assert again.recorded == [] and again.posted == []
    assert len(fake_slack.calls("chat.postMessage")) == 2


def test_rate_limited_post_waits_retry_after_and_succeeds(
        store: Store, fake_slack: FakeSlack, tmp_path: Path) -> None:
    config = make_config(tmp_path, fake_slack.api_url)
    fake_slack.fail("chat.postMessage", 429, retry_after=1)
    started = time.monotonic()
    report = post_suggestions(store, config, _suggestions(["payments/api"]),
                              client=_client(fake_slack), now=T0)
    assert len(report.posted) == 1 and not report.failed
    posts = fake_slack.calls("chat.postMessage")
    assert len(posts) == 2  # the refused one, then the retry
    assert posts[1].at - posts[0].at >= 1.0
    assert time.monotonic() - started >= 1.0


def test_server_error_leaves_the_batch_unposted_for_next_time(
        store: Store, fake_slack: FakeSlack, tmp_path: Path) -> None:
    config = make_config(tmp_path, fake_slack.api_url)
    fake_slack.fail("chat.postMessage", 500)
    first = post_suggestions(store, config, _suggestions(["payments/api"]),
                             client=_client(fake_slack), now=T0)
    assert first.posted == [] and list(first.failed) == first.recorded
    [batch] = decisions.list_batches(store, states=["pending"])
    assert batch.posted_ts is None
    second = post_suggestions(store, config, [], client=_client(fake_slack), now=T0)
    assert second.posted == [batch.id]
    assert decisions.get_batch(store, batch.id).posted_ts is not None


def test_messages_to_one_channel_are_paced(fake_slack: FakeSlack) -> None:
    waits: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    poster = Poster(_client(fake_slack), interval=1.0, sleep=sleep, monotonic=lambda: clock[0])
    for n in range(3):
        poster.post("C0PAYMENTS", text=f"message {n}")
        clock[0] += 0.25  # work between two posts
    poster.post("C0OTHER", text="another channel is not held back")
    assert waits == [0.75, 0.75]
    assert len(fake_slack.calls("chat.postMessage")) == 4
