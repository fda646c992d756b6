"""A newcomer's first week on a real registry with no history at all: push a handful of images,
``scan``, ``suggest``, ``suggest --post`` to Slack, approve with a signed click, ``execute``
after the cooling-off -- at today's clock and at one far in the future.

Everything is real but Slack (the fake Web API): the docker-registry, the store, the CLI as a
user types it, the server with the Bolt app answering the click.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.app import create_bolt_app, slack_routes
from bot.fakeslack import FakeSlack
from recommender import decisions
from recommender.cli import main
from recommender.registry.local import LocalRegistry
from recommender.registry.push import push_image
from recommender.registry.sync import RegistryClient
from recommender.server import build_app
from recommender.store import open_store
from recommender.timeutil import utcnow
from tests.support.live_server import LiveServer

from .helpers import Clock, click_payload, form, make_config, post_signed

POLICY = """
[model]
dir = "{models}"
horizon = "1d"

[registry]
url = "{url}"

[[policy]]
repositories = ["*"]
protected_tags = ["latest", "v*"]
keep_production = 0
keep_other = 0
min_age = "0s"
keep_deployed_within = "0s"
"""


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("far", [False, True], ids=["today", "in 2040"])
def test_first_week_on_a_registry_without_history(
        far: bool, registry: LocalRegistry, slack: FakeSlack, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = make_config(tmp_path, slack.api_url, store_url=url, extra=POLICY.format(
        models=tmp_path / "models", url=registry.url))
    path = str(tmp_path / "tagwarden.toml")

    def cli(*args: str) -> str:
        code = main(["--config", path, "--db", url, *args])
        out = capsys.readouterr()
        assert code == 0, out.err
        return out.out

    client = RegistryClient(registry.url)
    try:
        builds = [push_image(client, "payments/api", f"build-{i}", layers=[2000 + i],
                             seed=f"b{i}") for i in range(3)]
        release = push_image(client, "payments/api", "v1.0.0", layers=[4000], seed="rel")
        latest = push_image(client, "payments/web", "latest", layers=[5000], seed="web")
        cli("scan")
        now = datetime(2040, 1, 6, 9, 0, tzinfo=UTC) if far else utcnow() + timedelta(days=3)

        listed = json.loads(cli("suggest", "--now", _iso(now), "--all", "--format", "json"))
        verdict = {i["digest"]: i for i in listed}
        assert {b.digest for b in builds} | {release.digest, latest.digest} == set(verdict)
        assert all(verdict[b.digest]["suggested"] for b in builds)
        for kept in (release, latest):
            assert not verdict[kept.digest]["suggested"]
            assert any("protected tag" in r for r in verdict[kept.digest]["blocked_by"])
        assert "rules-only mode" in verdict[builds[0].digest]["reasons"][0]
        assert all(verdict[b.digest]["bytes"] for b in builds)  # the scan read the sizes

        assert "posted 1 batches (1 new)" in cli("suggest", "--now", _iso(now), "--post")
        reader = open_store(url, migrate_schema=False)
        try:
            [batch] = decisions.list_batches(reader)
        finally:
            reader.dispose()
        assert sorted(i.digest for i in batch.items) == sorted(b.digest for b in builds)
        [posted] = slack.calls("chat.postMessage")
        assert "size unknown" not in json.dumps(posted.blocks)

        clock = Clock(now + timedelta(minutes=5))
        store = open_store(url, migrate_schema=False)
        server = LiveServer(build_app(config, store, clock=clock, routes=slack_routes(
            create_bolt_app(config, store, clock=clock)))).start()
        try:
            body = form(click_payload("tw_approve", batch.id,
                                      response_url=slack.response_url()))
            assert post_signed(f"{server.url}/slack/events", body).status_code == 200
            slack.wait_for("chat.update")
        finally:
            server.stop()
            store.dispose()

        early = cli("execute", "--now", _iso(clock() + timedelta(hours=23)))
        assert "nothing due" in early
        assert all(client.head_manifest("payments/api", b.digest) for b in builds)

        done = cli("execute", "--now", _iso(clock() + timedelta(hours=25)))
        assert "3 deleted" in done, done
        for b in builds:
            assert client.head_manifest("payments/api", b.digest) is None
        assert client.head_manifest("payments/api", release.digest) == release.digest
        assert client.head_manifest("payments/web", latest.digest) == latest.digest
        assert client.list_tags("payments/api") == ["v1.0.0"]
    finally:
        client.close()
