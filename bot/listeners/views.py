"""Modal submissions: the Deny reason and the Review items check boxes.

Authorization is checked again at submission: the modal may have stayed open while the user
lost the right to decide.
"""

from __future__ import annotations

import json
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from recommender import decisions
from recommender.errors import DecisionError

from .. import blocks
from ..context import BotContext
from .actions import check

__all__ = ["register"]


def _batch_id(body: dict[str, Any]) -> str:
    return str(json.loads(body["view"]["private_metadata"] or "{}").get("batch_id", ""))


def _submitter(ctx: BotContext, client: WebClient, body: dict[str, Any], action: str,
               batch_id: str) -> str | None:
    allowed = check(ctx, client, body, action=action, batch_id=batch_id,
                    user=body["user"]["id"], workspace=(body.get("team") or {}).get("id"))
    return None if allowed is None else allowed[1]


def register(app: App, ctx: BotContext) -> None:
    def deny_submitted(body: dict[str, Any], client: WebClient) -> None:
        batch_id = _batch_id(body)
        user = _submitter(ctx, client, body, "deny", batch_id)
        if user is None:
            return
        values = body["view"]["state"]["values"]
        reason = ((values.get("reason") or {}).get("reason") or {}).get("value") or None
        try:
            result = decisions.deny(ctx.store, batch_id=batch_id, user_id=user,
                                    now=ctx.clock(), reason=reason)
        except DecisionError as exc:
            ctx.tell(client, body, f"Nothing changed: {exc.message}")
            return
        if result.changed:
            ctx.redraw(client, batch_id)
        else:
            ctx.tell(client, body, f"Nothing changed: {result.message}")

    def review_ack(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        # Validation answers inside the modal, so it must happen before the ack.
        if not blocks.checked_item_ids(body["view"]["state"]["values"]):
            first = next((b for b in body["view"]["state"]["values"] if b.startswith("items-")),
                         "items-0")
            ack(response_action="errors",
                errors={first: "Keep at least one item ticked, or use Deny instead."})
            return
        ack()
        ctx.later(review_submitted, body, client)

    def review_submitted(body: dict[str, Any], client: WebClient) -> None:
        batch_id = _batch_id(body)
        user = _submitter(ctx, client, body, "approve_items", batch_id)
        if user is None:
            return
        loaded = ctx.load(batch_id)
        assert loaded is not None
        # Items that did not fit in the modal were not shown, so they were not dropped.
        kept = blocks.checked_item_ids(body["view"]["state"]["values"])
        kept += blocks.unlisted_item_ids(loaded.view, blocks.review_modal(loaded.view))
        try:
            result = decisions.approve(ctx.store, batch_id=batch_id, user_id=user,
                                       now=ctx.clock(), item_ids=[int(i) for i in kept])
        except DecisionError as exc:
            ctx.tell(client, body, f"Nothing changed: {exc.message}")
            return
        if result.changed or (result.state == decisions.BatchState.PENDING
                              and user in result.approvals):
            ctx.redraw(client, batch_id)
        if not result.changed:
            ctx.tell(client, body, f"Nothing changed yet: {result.message}")

    def deny_ack(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        ctx.later(deny_submitted, body, client)

    app.view(blocks.VIEW_DENY)(deny_ack)
    app.view(blocks.VIEW_REVIEW)(review_ack)
