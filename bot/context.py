"""What every listener needs, handed in once by :func:`bot.app.create_bolt_app`.

Also the two Slack writes listeners share: redraw a batch's message in place, and tell one
user something only they see.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from recommender import decisions
from recommender.config import Config
from recommender.store import Store

from . import blocks
from .auth import Authorizer
from .batches import LoadedBatch, load_batch

__all__ = ["BotContext", "message_for"]

log = logging.getLogger(__name__)


@dataclass
class BotContext:
    config: Config
    store: Store
    clock: Callable[[], datetime]
    authorizer: Authorizer
    # Work after the ack runs here. Bolt's lazy listeners would deep-copy each request (most
    # of the cost of an acknowledgement); the listeners only read the parsed body, so handing
    # the same objects to a worker is safe.
    workers: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=8, thread_name_prefix="tagwarden-slack"))

    def later(self, work: Callable[..., Any], *args: Any) -> Future[Any]:
        def run() -> Any:
            try:
                return work(*args)
            except Exception:
                log.exception("slack follow-up %s failed", getattr(work, "__name__", work))
                raise

        return self.workers.submit(run)

    def load(self, batch_id: str) -> LoadedBatch | None:
        with self.store.connect() as conn:
            return load_batch(conn, batch_id)

    def refuse(self, client: WebClient, body: dict[str, Any], *, action: str, user: str,
               batch_id: str, reason: str) -> None:
        """Audit a refused click (allowed ones are audited with their decision) and tell
        the user, ephemerally, why nothing happened."""
        decisions.record_refusal(self.store, batch_id=batch_id, user_id=user, action=action,
                                 now=self.clock(), reason=reason)
        self.tell(client, body, f":lock: Not allowed: {reason}. Nothing was changed.")

    def redraw(self, client: WebClient, batch_id: str, *, channel: str | None = None,
               ts: str | None = None) -> LoadedBatch | None:
        """Update the batch's message in place with what the store now says."""
        loaded = self.load(batch_id)
        if loaded is None:
            return None
        channel = loaded.channel or channel
        ts = loaded.ts or ts
        if not channel or not ts:
            return loaded
        try:
            client.chat_update(channel=channel, ts=ts, **message_for(loaded))
        except (SlackApiError, SlackClientError) as exc:
            # The decision is recorded; a stale message is cosmetic and redrawn next time.
            log.warning("chat.update %s failed: %s", batch_id, exc)
        return loaded

    @staticmethod
    def tell(client: WebClient, body: dict[str, Any], text: str) -> None:
        """An ephemeral message to the clicking user in the channel of the click."""
        user = (body.get("user") or {}).get("id") or body.get("user_id")
        channel = ((body.get("channel") or {}).get("id") or body.get("channel_id")
                   or (body.get("container") or {}).get("channel_id"))
        try:
            if channel and user:
                client.chat_postEphemeral(channel=channel, user=user, **blocks.ephemeral(text))
            elif user:  # from a modal: no channel; a DM from the bot reaches them
                client.chat_postMessage(channel=user, **blocks.ephemeral(text))
        except (SlackApiError, SlackClientError) as exc:
            log.warning("could not tell %s: %s", user, exc)


def message_for(loaded: LoadedBatch) -> dict[str, Any]:
    """The message a batch should show in its current state."""
    state = loaded.decision.state
    if state == decisions.BatchState.PENDING:
        return blocks.batch_message(loaded.view, loaded.decision)
    if state in {decisions.BatchState.APPROVED, decisions.BatchState.DONE} and loaded.finished:
        return blocks.result_message(loaded.view, loaded.decision)
    return blocks.decided_message(loaded.view, loaded.decision)
