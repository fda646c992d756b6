"""Approving a batch the way Slack does it: a signed ``block_actions`` request to
``/slack/events``.

1. Find where the bot posted the batch (channel and message ts, which the bot records in the
   store) and, when the fake Slack recorded it, the message's blocks: the ``tw_approve``
   button's value is the batch id.
2. Build the interaction payload Slack sends for that click (user, team, channel, message ts,
   ``response_url``), form-encode it as ``payload=...``.
3. Sign ``v0:{timestamp}:{body}`` with HMAC-SHA256 and the signing secret — Bolt refuses any
   request whose signature or timestamp (older than five minutes) does not check out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from bot.blocks import ACTION_APPROVE

from .services import DemoError

__all__ = ["PostedBatch", "approve_payload", "blocks_by_batch", "send_signed", "sign"]


@dataclass(frozen=True)
class PostedBatch:
    batch_id: str
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]


def _buttons(blocks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for block in blocks:
        for element in block.get("elements") or []:
            if element.get("type") == "button":
                yield element
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("type") == "button":
            yield accessory


def blocks_by_batch(messages: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Arguments of each recorded ``chat.postMessage`` → batch id → the blocks showing it."""
    found: dict[str, list[dict[str, Any]]] = {}
    for args in messages:
        blocks = args.get("blocks") or []
        blocks = json.loads(blocks) if isinstance(blocks, str) else list(blocks)
        for button in _buttons(blocks):
            if button.get("action_id") == ACTION_APPROVE:
                found[str(button["value"])] = blocks
                break
    return found


def approve_payload(batch: PostedBatch, *, user: str, team: str,
                    response_url: str) -> dict[str, Any]:
    """The ``block_actions`` payload of a click on Approve (the fields Slack documents)."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "demo-approver", "team_id": team},
        "api_app_id": "A0TAGWARDEN",
        "token": "unused-legacy-verification-token",
        "container": {"type": "message", "message_ts": batch.ts, "channel_id": batch.channel,
                      "is_ephemeral": False},
        "trigger_id": f"{int(time.time())}.1.demo",
        "team": {"id": team, "domain": "tagwarden-demo"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": batch.channel, "name": "demo"},
        "message": {"type": "message", "ts": batch.ts, "text": batch.text,
                    "blocks": batch.blocks},
        "response_url": response_url,
        "actions": [{"action_id": ACTION_APPROVE, "block_id": "actions", "type": "button",
                     "value": batch.batch_id, "action_ts": f"{time.time():.6f}"}],
    }


def sign(body: str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={mac}",
            "Content-Type": "application/x-www-form-urlencoded"}


def send_signed(events_url: str, payload: dict[str, Any], secret: str) -> httpx.Response:
    body = "payload=" + urllib.parse.quote(json.dumps(payload))
    response = httpx.post(events_url, content=body, headers=sign(body, secret), timeout=30)
    if response.status_code != 200:
        raise DemoError(f"/slack/events answered {response.status_code}: {response.text[:300]}",
                        step="approve", status=response.status_code)
    return response
