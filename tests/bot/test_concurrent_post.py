"""Two posting runs at once post every batch once (the fake Slack counts the messages).

As an operator sees it: two ``tagwarden suggest --post`` started in the same instant, as two
real processes on real PostgreSQL, against a real registry and the fake Slack on loopback.
Without a claim each would post all five batches (ten messages). And one level down, two
:func:`bot.posting.post_suggestions` at once (the scheduled job beside a run that does not
claim the job) on both stores: each batch is claimed before its post.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from bot.fakeslack import FakeSlack
from bot.posting import Poster, PostReport, post_suggestions
from recommender import config as config_mod
from recommender import decisions, fencing
from recommender.cli import main
from recommender.errors import LeaseLost
from recommender.leadership import Lease
from recommender.registry.local import LocalRegistry
from recommender.registry.push import push_image
from recommender.registry.sync import RegistryClient
from recommender.store import Store, open_store
from recommender.timeutil import utcnow
from tests.support import postgres
from tests.support.at_once import cli_twice_at_once

from .helpers import T0, TOKEN, Suggestion, digest

REPOSITORIES = [f"payments/app{n}" for n in range(5)]

CONFIG = """
[slack]
api_url = "{api_url}"
bot_token = "{token}"
signing_secret = "8f742231b10e8888abcd99yyyzzz85a5"
post_interval = "{interval}"

[model]
horizon = "1d"

[registry]
url = "{registry}"

[[policy]]
repositories = ["*"]
keep_production = 0
keep_other = 0
min_age = "0s"
keep_deployed_within = "0s"

[[team]]
name = "payments"
repositories = ["payments/*"]
channel = "C0PAYMENTS"
approvers = ["U0ALICE"]
"""

@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _at_once(args: list[str], tmp_path: Path) -> list[subprocess.CompletedProcess[str]]:
    return cli_twice_at_once(args, tmp_path, timeout=240, preload=(
        "bot.notify", "recommender.recommend", "recommender.jobruns"))


@pytest.mark.timeout(300)
def test_two_suggest_post_at_once_post_every_batch_once(
        postgres_server: str, registry: LocalRegistry, slack: FakeSlack, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = postgres.create_database(postgres_server, f"p_{uuid.uuid4().hex[:12]}")
    cfg = tmp_path / "tagwarden.toml"
    cfg.write_text(CONFIG.format(api_url=slack.api_url, token=TOKEN, interval="0.5s",
                                 registry=registry.url), encoding="utf-8")
    client = RegistryClient(registry.url)
    try:
        for n, repo in enumerate(REPOSITORIES):
            for build in range(2):
                push_image(client, repo, f"build-{build}", layers=[1000 + 10 * n + build],
                           seed=f"{repo}-{build}")
    finally:
        client.close()
    assert main(["--config", str(cfg), "--db", url, "scan"]) == 0, capsys.readouterr().err
    when = (utcnow() + timedelta(days=3)).isoformat()

    results = _at_once(["--config", str(cfg), "--db", url, "suggest", "--now", when, "--post"],
                       tmp_path)

    for result in results:
        assert result.returncode == 0, result.stderr
    store = open_store(url, migrate_schema=False)
    try:
        batches = decisions.list_batches(store)
    finally:
        store.dispose()
    assert len(batches) == len(REPOSITORIES), [r.stdout + r.stderr for r in results]
    assert all(b.posted_ts for b in batches)
    posts = slack.calls("chat.postMessage")
    assert len(posts) == len(batches), [r.stdout for r in results]
    assert sorted(r.stdout.count("posted 5 batches") for r in results) == [0, 1]


def _pending_batches(store: Store, slack: FakeSlack, tmp_path: Path, *,
                     interval: str) -> config_mod.Config:
    """A config posting to the fake Slack every ``interval``, and one pending batch per
    repository recorded in ``store``."""
    cfg = tmp_path / "tagwarden.toml"
    cfg.write_text(CONFIG.format(api_url=slack.api_url, token=TOKEN, interval=interval,
                                 registry=""), encoding="utf-8")
    config = config_mod.load(cfg, env={})
    suggestions = [Suggestion(repo, digest(n), tags=["build-1"])
                   for n, repo in enumerate(REPOSITORIES)]
    decisions.record_batches(store, suggestions, now=T0, config=config)
    return config


def test_two_posting_runs_at_once_claim_each_batch(store: Store, slack: FakeSlack,
                                                   tmp_path: Path) -> None:
    config = _pending_batches(store, slack, tmp_path, interval="0.3s")
    start = threading.Barrier(2)
    reports: dict[str, PostReport] = {}

    def run(owner: str) -> None:
        start.wait()
        reports[owner] = post_suggestions(
            store, config, [], client=WebClient(token=TOKEN, base_url=slack.api_url), now=T0,
            owner=owner)

    threads = [threading.Thread(target=run, args=(owner,)) for owner in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    posted = reports["a"].posted + reports["b"].posted
    assert sorted(posted) == sorted(b.id for b in decisions.list_batches(store))
    assert len(slack.calls("chat.postMessage")) == len(REPOSITORIES)
    # Each run skipped what the other posted.
    assert set(reports["a"].skipped) | set(reports["b"].skipped) <= set(posted)


def test_a_posting_run_that_loses_its_lease_posts_no_more_and_keeps_what_it_posted(
        store: Store, slack: FakeSlack, tmp_path: Path) -> None:
    config = _pending_batches(store, slack, tmp_path, interval="0s")
    mono = [1000.0]
    lease = Lease(store, "leader-a", timedelta(seconds=15), monotonic=lambda: mono[0])
    assert lease.acquire()
    client = WebClient(token=TOKEN, base_url=slack.api_url)

    class FreezingPoster(Poster):
        def post(self, channel: str, **message: Any) -> dict[str, Any]:
            answer = super().post(channel, **message)
            mono[0] += 15.0  # the leader froze for a whole lease after its first post
            return answer

    with fencing.fenced(lease.fence), pytest.raises(LeaseLost):
        post_suggestions(store, config, [], client=client, now=T0,
                         poster=FreezingPoster(client, interval=0.0), owner="leader-a")
    first = [b for b in decisions.list_batches(store) if b.posted_ts]
    assert len(first) == 1 and len(slack.calls("chat.postMessage")) == 1  # kept where it is
    # The next leader posts the rest, each once: the lapsed run left no claim behind.
    report = post_suggestions(store, config, [], client=client, now=T0, owner="leader-b")
    assert len(report.posted) == len(REPOSITORIES) - 1 and not report.skipped
    assert len(slack.calls("chat.postMessage")) == len(REPOSITORIES)
    assert all(b.posted_ts for b in decisions.list_batches(store))
