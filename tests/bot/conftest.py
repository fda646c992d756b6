"""The bot served for real: the server app under uvicorn on loopback, the real Bolt app, the
fake Slack Web API, and the store on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.app import create_bolt_app, slack_routes
from recommender import decisions
from recommender.config import Config
from recommender.server import build_app
from recommender.store import Store
from tests.support.fake_slack import FakeSlack
from tests.support.live_server import LiveServer

from .helpers import Clock, Suggestion, digest, make_config


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack(usergroups={"S0PAYAPPROVERS": ["U0CAROL"]}) as fake:
        yield fake


@dataclass
class Bot:
    url: str
    fake: FakeSlack
    store: Store
    config: Config
    clock: Clock

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"

    def new_batch(self, items: int = 3, *, repository: str = "payments/api",
                  start: int = 1) -> decisions.BatchRecord:
        """Record a batch and remember where its message is, as posting does."""
        suggestions = [Suggestion(repository, digest(start + n), tags=[f"build-{start + n}"])
                       for n in range(items)]
        [batch] = decisions.record_batches(self.store, suggestions, now=self.clock(),
                                           config=self.config)
        decisions.set_posted(self.store, batch_id=batch.id, channel="C0PAYMENTS",
                             ts=f"1700000{start:03d}.000100", now=self.clock())
        return decisions.get_batch(self.store, batch.id)


@pytest.fixture
def bot_factory(store: Store, fake_slack: FakeSlack,
                tmp_path: Path) -> Iterator[Callable[..., Bot]]:
    servers: list[LiveServer] = []

    def make(**config_kwargs: Any) -> Bot:
        config = make_config(tmp_path, fake_slack.api_url, **config_kwargs)
        clock = Clock()
        bolt = create_bolt_app(config, store, clock=clock)
        server = LiveServer(build_app(config, store, clock=clock,
                                      routes=slack_routes(bolt))).start()
        servers.append(server)
        return Bot(server.url, fake_slack, store, config, clock)

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def bot(bot_factory: Callable[..., Bot]) -> Bot:
    return bot_factory()
