"""Button clicks on batch messages: Approve, Deny, Snooze, Review items, Cancel.

Each click is acknowledged at once (Slack wants ``ack()`` within 3 s); the work runs after it
on the bot's worker threads: 1. authorize the user against the owning team, at click time;
2. audit the click, allowed or refused; 3. ask :mod:`recommender.decisions` for the state
change (atomic there: five concurrent clicks make one transition); 4. redraw the message in
place, or tell the user ephemerally why nothing happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from recommender import decisions
from recommender.errors import DecisionError

from .. import blocks
from ..context import BotContext

__all__ = ["SNOOZE", "authorize", "check", "register"]

log = logging.getLogger(__name__)

SNOOZE = timedelta(days=7)


def _click(body: dict[str, Any]) -> tuple[str, str, str | None]:
    action = body["actions"][0]
    return action["value"], body["user"]["id"], (body.get("team") or {}).get("id")


def authorize(ctx: BotContext, client: WebClient, body: dict[str, Any],
              action: str) -> tuple[str, str] | None:
    """Steps 1 and 2: the batch exists and the user may decide on it (refusals audited)."""
    batch_id, user, workspace = _click(body)
    return check(ctx, client, body, action=action, batch_id=batch_id, user=user,
                 workspace=workspace)


def check(ctx: BotContext, client: WebClient, body: dict[str, Any], *, action: str,
          batch_id: str, user: str, workspace: str | None) -> tuple[str, str] | None:
    loaded = ctx.load(batch_id)
    if loaded is None:
        ctx.refuse(client, body, action=action, user=user, batch_id=batch_id,
                   reason="this batch does not exist")
        return None
    verdict = ctx.authorizer.check(user_id=user, repository=loaded.view.repository,
                                   workspace=workspace, anyone=action == "cancel")
    if not verdict:
        ctx.refuse(client, body, action=action, user=user, batch_id=batch_id,
                   reason=verdict.reason)
        return None
    return batch_id, user


def _where(body: dict[str, Any]) -> dict[str, str | None]:
    container = body.get("container") or {}
    return {"channel": container.get("channel_id") or (body.get("channel") or {}).get("id"),
            "ts": container.get("message_ts") or (body.get("message") or {}).get("ts")}


def _decide(ctx: BotContext, client: WebClient, body: dict[str, Any], action: str,
            **kwargs: Any) -> None:
    allowed = authorize(ctx, client, body, action)
    if allowed is None:
        return
    batch_id, user = allowed
    choices: dict[str, Callable[..., decisions.DecisionResult]] = {
        "approve": decisions.approve, "snooze": decisions.snooze, "cancel": decisions.cancel,
    }
    decide = choices[action]
    try:
        result = decide(ctx.store, batch_id=batch_id, user_id=user, now=ctx.clock(), **kwargs)
    except DecisionError as exc:
        ctx.tell(client, body, f"Nothing changed: {exc.message}")
        ctx.redraw(client, batch_id, **_where(body))
        return
    if result.changed:
        ctx.redraw(client, batch_id, **_where(body))
    elif (action == "approve" and result.state == decisions.BatchState.PENDING
          and user in result.approvals):
        # Two-person rule: this approval counts, the batch waits for another approver.
        ctx.redraw(client, batch_id, **_where(body))
        ctx.tell(client, body, f"Your approval is recorded ({len(result.approvals)} of "
                               f"{result.needed}); another approver must approve too.")
    else:
        ctx.tell(client, body, f"Nothing changed: {result.message}")


def register(app: App, ctx: BotContext) -> None:
    def approve(body: dict[str, Any], client: WebClient) -> None:
        _decide(ctx, client, body, "approve")

    def snooze(body: dict[str, Any], client: WebClient) -> None:
        _decide(ctx, client, body, "snooze", until=ctx.clock() + SNOOZE)

    def cancel(body: dict[str, Any], client: WebClient) -> None:
        _decide(ctx, client, body, "cancel")

    def open_modal(body: dict[str, Any], client: WebClient, action: str) -> None:
        # The trigger_id is valid for 3 s: authorize and open right away.
        allowed = authorize(ctx, client, body, action)
        if allowed is None:
            return
        loaded = ctx.load(allowed[0])
        if loaded is None or loaded.decision.state != decisions.BatchState.PENDING:
            ctx.tell(client, body, "This batch is no longer waiting for a decision.")
            return
        view = (blocks.deny_modal(loaded.view) if action == "deny"
                else blocks.review_modal(loaded.view))
        try:
            client.views_open(trigger_id=body["trigger_id"], view=view)
        except (SlackApiError, SlackClientError) as exc:
            log.warning("views.open for %s failed: %s", allowed[0], exc)

    def deny(body: dict[str, Any], client: WebClient) -> None:
        open_modal(body, client, "deny")

    def review(body: dict[str, Any], client: WebClient) -> None:
        open_modal(body, client, "review")

    for action_id, work in ((blocks.ACTION_APPROVE, approve), (blocks.ACTION_SNOOZE, snooze),
                            (blocks.ACTION_CANCEL, cancel), (blocks.ACTION_DENY, deny),
                            (blocks.ACTION_REVIEW, review)):
        app.action(action_id)(_acked(ctx, work))


def _acked(ctx: BotContext,
           work: Callable[[dict[str, Any], WebClient], None]) -> Callable[..., None]:
    """A listener that acknowledges at once and leaves ``work`` to the bot's workers."""

    def listener(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        ctx.later(work, body, client)

    listener.__name__ = f"ack_{work.__name__}"
    return listener
