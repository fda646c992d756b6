"""`tagwarden execute` run by hand redraws the Slack messages of the batches it finished, as
the scheduler's job does; a dry run posts nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recommender import decisions
from recommender.cli import main
from recommender.registry.local import LocalRegistry
from recommender.registry.push import push_image
from recommender.registry.sync import RegistryClient
from recommender.store import Store
from tests.support.fake_slack import FakeSlack

from .helpers import T0, Suggestion, make_config
from .test_end_to_end import POLICY


def test_execute_by_hand_publishes_the_results(
        store: Store, store_url: str, fake_slack: FakeSlack, registry: LocalRegistry,
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, fake_slack.api_url, extra=POLICY.format(url=registry.url))
    client = RegistryClient(registry.url)
    try:
        old = push_image(client, "payments/api", "build-1", layers=[3000], seed="old")
    finally:
        client.close()
    [batch] = decisions.record_batches(store, [Suggestion("payments/api", old.digest,
                                                          ["build-1"])], now=T0, config=config)
    decisions.set_posted(store, batch_id=batch.id, channel="C0PAYMENTS",
                         ts="1700000001.000100", now=T0)
    decisions.approve(store, batch_id=batch.id, user_id="U0ALICE", now=T0)
    cfg = str(tmp_path / "tagwarden.toml")
    due = "2026-03-03T10:00:00Z"

    assert main(["--config", cfg, "--db", store_url, "execute", "--dry-run", "--now", due]) == 0
    assert "would_delete" in capsys.readouterr().out
    assert fake_slack.calls("chat.update") == []

    assert main(["--config", cfg, "--db", store_url, "execute", "--now", due]) == 0
    out = capsys.readouterr().out
    assert "deleted" in out and "1 Slack message(s) updated with the results" in out
    [update] = fake_slack.calls("chat.update")
    assert update.args["ts"] == "1700000001.000100"
    assert "1 deleted" in json.dumps(update.blocks)

    # Nothing left to draw: a second run updates no message.
    assert main(["--config", cfg, "--db", store_url, "execute", "--now", due]) == 0
    assert len(fake_slack.calls("chat.update")) == 1
