"""`tagwarden digest` and `tagwarden slack manifest` as a user runs them; the app manifest
agrees with what the bot registers and calls."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import bot
from bot.app import EVENTS_PATH
from bot.listeners.commands import COMMAND
from recommender import decisions
from recommender.cli import main
from recommender.store import open_store
from tests.support.fake_slack import FakeSlack

from .helpers import T0, Suggestion, digest, make_config

# The scope each Web API method the bot calls needs (https://api.slack.com/methods).
SCOPES = {
    "chat_postMessage": "chat:write",
    "chat_update": "chat:write",
    "chat_postEphemeral": "chat:write",
    "usergroups_users_list": "usergroups:read",
    "views_open": None,  # needs a trigger_id, no scope
    "auth_test": None,
}


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Callable[..., Done]:
    """The CLI in-process (the entry point `tagwarden` calls), output captured."""
    monkeypatch.chdir(tmp_path)

    def call(*args: str, cwd: Path | None = None) -> Done:
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Done(code, out.out, out.err)

    return call


def _manifest() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((Path(bot.__file__).parent / "manifest.yml").read_text())


def test_manifest_matches_the_listeners_and_the_calls() -> None:
    manifest = _manifest()
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == COMMAND
    assert command["url"].endswith(EVENTS_PATH)
    assert manifest["settings"]["interactivity"]["request_url"].endswith(EVENTS_PATH)
    source = "".join(p.read_text() for p in Path(bot.__file__).parent.rglob("*.py")
                     if "demo" not in p.parts)  # the demo's registry client is not Slack's
    called = set(re.findall(r"client\.(\w+)\(", source))
    assert called <= set(SCOPES), f"add the scope of {called - set(SCOPES)} to the test"
    needed = {SCOPES[m] for m in called} - {None} | {"commands"}
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed


def test_slack_manifest_command_points_at_the_public_url(run: Callable[..., Done],
                                                        tmp_path: Path) -> None:
    done = run("slack", "manifest", "--url", "https://tw.internal.example:8443/", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load(done.stdout)
    assert manifest["settings"]["interactivity"]["request_url"] == \
        "https://tw.internal.example:8443/slack/events"
    bad = run("slack", "manifest", "--url", "tw.example", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("error: public URL must start")
    assert "Traceback" not in bad.stderr


def test_digest_command_prints_and_posts(run: Callable[..., Done], tmp_path: Path,
                                         fake_slack: FakeSlack) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    config = make_config(tmp_path, fake_slack.api_url, store_url=db)
    store = open_store(db)
    try:
        decisions.record_batches(store, [Suggestion("payments/api", digest(1))], now=T0,
                                 config=config)
    finally:
        store.dispose()
    cfg = str(tmp_path / "tagwarden.toml")
    printed = run("--config", cfg, "--db", db, "digest", "--now", "2026-03-02T10:00:00Z",
                  cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert "# payments -> C0PAYMENTS" in printed.stdout
    assert "payments/api* — 1 build manifest, 310.0 MB" in printed.stdout
    assert not fake_slack.requests
    posted = run("--config", cfg, "--db", db, "digest", "--post", cwd=tmp_path)
    assert posted.returncode == 0, posted.stderr
    assert "payments: digest posted to C0PAYMENTS, 1 page(s)" in posted.stdout
    assert len(fake_slack.calls("chat.postMessage")) == 2
    unknown = run("--config", cfg, "--db", db, "digest", "--team", "nobody", cwd=tmp_path)
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: no team 'nobody'")
