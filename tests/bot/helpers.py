"""Helpers of the bot tests: signed Slack requests, suggestions, a settable clock."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from recommender import config as config_mod

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-test-token"
WORKSPACE = "T0TAGWARDEN"


class Clock:
    """An injected clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Suggestion:
    """The fields of the recommender's Suggestion that decisions and posting read."""

    repository: str
    digest: str
    tags: list[str] = field(default_factory=list)
    score: float = 0.9
    suggested: bool = True
    reclaimable_bytes: int = 310_000_000
    reasons: list[str] = field(default_factory=lambda: ["no use for 143 days",
                                                        "37 newer builds"])
    blocked_by: list[str] = field(default_factory=list)
    batch: str = ""
    kind: str = "build"

    def __post_init__(self) -> None:
        if not self.batch:
            self.batch = f"{self.repository}::{self.kind}"


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def make_config(tmp_path: Path, api_url: str, *, min_approvals: int = 1,
                approver_group: str | None = None, approvers: tuple[str, ...] = ("U0ALICE",
                                                                                  "U0BOB"),
                store_url: str | None = None, extra: str = "") -> config_mod.Config:
    group = f'approver_group = "{approver_group}"' if approver_group else ""
    path = tmp_path / "tagwarden.toml"
    path.write_text(f"""{extra}
[slack]
api_url = "{api_url}"
bot_token = "{TOKEN}"
signing_secret = "{SECRET}"
team_id = "{WORKSPACE}"
post_interval = "0s"

[[team]]
name = "payments"
repositories = ["payments/*"]
channel = "C0PAYMENTS"
approvers = {json.dumps(list(approvers))}
{group}
cool_off = "24h"
min_approvals = {min_approvals}
""", encoding="utf-8")
    overrides = {"store.url": store_url} if store_url else None
    return config_mod.load(path, env={}, overrides=overrides)


def sign(body: str, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """Headers exactly as Slack signs a request: HMAC-SHA256 of ``v0:{ts}:{body}``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={mac}",
            "Content-Type": "application/x-www-form-urlencoded"}


def click_payload(action_id: str, batch_id: str, *, user: str = "U0ALICE",
                  team: str = WORKSPACE, response_url: str = "", channel: str = "C0PAYMENTS",
                  message_ts: str = "1700000001.000100") -> dict[str, Any]:
    """A block_actions payload shaped like Slack's (fields Bolt and the listeners read)."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": team},
        "api_app_id": "A0TAGWARDEN",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel,
                      "is_ephemeral": False},
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "team": {"id": team, "domain": "tagwarden"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "payments"},
        "message": {"type": "message", "ts": message_ts, "text": "batch"},
        "response_url": response_url,
        "actions": [{"action_id": action_id, "block_id": "b-actions", "value": batch_id,
                     "type": "button", "action_ts": "1700000002.000300"}],
    }


def view_payload(callback_id: str, batch_id: str, values: dict[str, Any], *,
                 user: str = "U0ALICE", team: str = WORKSPACE) -> dict[str, Any]:
    return {
        "type": "view_submission",
        "team": {"id": team, "domain": "tagwarden"},
        "user": {"id": user, "username": user.lower(), "team_id": team},
        "api_app_id": "A0TAGWARDEN",
        "token": "legacy-verification-token",
        "trigger_id": "12345.98765.abcd",
        "view": {"id": "V0001", "type": "modal", "callback_id": callback_id,
                 "private_metadata": json.dumps({"batch_id": batch_id}),
                 "state": {"values": values}, "hash": "1", "team_id": team},
        "is_enterprise_install": False,
    }


def form(payload: dict[str, Any]) -> str:
    return "payload=" + urllib.parse.quote(json.dumps(payload))


def post_signed(url: str, body: str, **sign_kwargs: Any) -> httpx.Response:
    return httpx.post(url, content=body, headers=sign(body, **sign_kwargs), timeout=10)
