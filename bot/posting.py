"""Posting batches to Slack, and redrawing them when the executor has finished.

:func:`post_suggestions` records new batches (through :func:`recommender.decisions
.record_batches`, idempotent), then posts every pending batch that has no message yet to its
team's channel, about one message per second per channel. Each batch is claimed in the store
before its post (:func:`recommender.batches.claim_posting`), so two runs at once (the scheduled
job and ``suggest --post`` by hand) post it once: the other skips it. A 429 waits
``Retry-After`` and retries; any other failure (a 500, a timeout) leaves the batch unposted
(and unclaimed) for the next run.
:func:`publish_results` draws the final message (deleted / skipped / failed) once per batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy import select

from recommender import decisions, fencing
from recommender.batches import claim_posting, release_posting
from recommender.config import Config
from recommender.errors import LeaseLost
from recommender.store import Store, dialect_insert
from recommender.store import tables as t
from recommender.store.db import application_name
from recommender.timeutil import utcnow

from . import blocks
from .batches import load_batch
from .context import message_for

__all__ = ["PostReport", "Poster", "post_suggestions", "publish_results", "send"]

log = logging.getLogger(__name__)

MAX_RATE_LIMIT_RETRIES = 5


@dataclass
class PostReport:
    recorded: list[str] = field(default_factory=list)  # batch ids created by this run
    posted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # batch id -> error
    skipped: dict[str, str] = field(default_factory=dict)  # batch id -> why not posted


class Poster:
    """Sends messages, pacing each channel and waiting out rate limits.

    ``sleep`` and ``monotonic`` are injectable so tests and benchmarks see the waits.
    """

    def __init__(self, client: WebClient, *, interval: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.interval = interval
        self.sleep = sleep
        self.monotonic = monotonic
        self._last: dict[str, float] = {}

    def _pace(self, channel: str) -> None:
        last = self._last.get(channel)
        if last is not None:
            wait = self.interval - (self.monotonic() - last)
            if wait > 0:
                self.sleep(wait)

    def post(self, channel: str, **message: Any) -> dict[str, Any]:
        """``chat.postMessage``; raises SlackApiError/SlackClientError when it finally fails,
        :class:`~recommender.errors.LeaseLost` when a scheduled run lost its lease before."""
        for attempt in range(MAX_RATE_LIMIT_RETRIES + 1):
            fencing.check()
            self._pace(channel)
            try:
                resp = self.client.chat_postMessage(channel=channel, **message)
                return dict(resp.data) if isinstance(resp.data, dict) else {}
            except SlackApiError as exc:
                if exc.response.status_code != 429 or attempt == MAX_RATE_LIMIT_RETRIES:
                    raise
                retry_after = float(exc.response.headers.get("Retry-After", 1) or 1)
                log.info("rate limited on %s; waiting %.0f s", channel, retry_after)
                self.sleep(retry_after)
            finally:
                self._last[channel] = self.monotonic()
        raise AssertionError("unreachable")


def send(poster: Poster, channel: str, message: dict[str, Any]) -> str | None:
    """Post one message; its ``ts``, or None when Slack refused it (logged)."""
    try:
        return str(poster.post(channel, **message).get("ts"))
    except (SlackApiError, SlackClientError) as exc:
        log.warning("chat.postMessage to %s failed: %s", channel, exc)
        return None


def post_suggestions(store: Store, config: Config, suggestions: Iterable[Any], *,
                     client: WebClient, now: datetime,
                     poster: Poster | None = None, owner: str | None = None,
                     clock: Callable[[], datetime] = utcnow) -> PostReport:
    """Record new batches from ``suggestions`` and post every unposted pending batch that no
    other poster is posting. ``owner`` names this poster in the claims (default: this
    process); ``clock`` dates them (the wall clock, whatever ``now`` the run acts as of)."""
    poster = poster or Poster(client, interval=config["slack.post_interval"].total_seconds())
    owner = owner or application_name()
    timeout = config["slack.post_claim_timeout"]
    report = PostReport()
    report.recorded = [b.id for b in decisions.record_batches(store, suggestions, now=now,
                                                                config=config)]
    for batch in decisions.list_batches(store, states=[decisions.BatchState.PENDING],
                                       unposted=True):
        if not batch.channel:
            report.skipped[batch.id] = f"team {batch.team} has no channel"
            continue
        if not claim_posting(store, batch.id, owner=owner, now=clock(), timeout=timeout):
            report.skipped[batch.id] = "posted or being posted by another run"
            continue
        with store.connect() as conn:
            loaded = load_batch(conn, batch.id)
        assert loaded is not None
        message = blocks.batch_message(loaded.view, loaded.decision)
        try:
            resp = poster.post(batch.channel, **message)
        except (SlackApiError, SlackClientError) as exc:
            # Left unposted: the next run (the daily job, `suggest --post`) tries again.
            with fencing.unfenced():
                release_posting(store, batch.id, owner=owner)
            report.failed[batch.id] = str(exc).splitlines()[0]
            log.warning("posting batch %s failed: %s", batch.id, report.failed[batch.id])
            continue
        except LeaseLost:
            with fencing.unfenced():  # not posted: the new leader's run posts it
                release_posting(store, batch.id, owner=owner)
            raise
        with fencing.unfenced():  # the message is out: where it is must be kept
            decisions.set_posted(store, batch_id=batch.id, channel=str(resp.get("channel")
                                                                        or batch.channel),
                                 ts=str(resp["ts"]), now=now)
        report.posted.append(batch.id)
    return report


def publish_results(store: Store, *, client: WebClient, now: datetime) -> list[str]:
    """Draw the final message of every posted batch the executor has finished; once each."""
    with store.connect() as conn:
        candidates = list(conn.execute(
            select(t.batches.c.id)
            .where(t.batches.c.state.in_([decisions.BatchState.APPROVED,
                                          decisions.BatchState.DONE]))
            .where(t.batches.c.posted_ts.is_not(None))
            .where(t.batches.c.id.not_in(select(t.slack_updates.c.batch_id)
                                         .where(t.slack_updates.c.stage == "result")))
            .order_by(t.batches.c.id)).scalars())
    drawn: list[str] = []
    for batch_id in candidates:
        with store.connect() as conn:
            loaded = load_batch(conn, batch_id)
        if loaded is None or not loaded.finished or not loaded.channel or not loaded.ts:
            continue
        fencing.check()
        try:
            client.chat_update(channel=loaded.channel, ts=loaded.ts, **message_for(loaded))
        except (SlackApiError, SlackClientError) as exc:
            log.warning("result of batch %s not drawn: %s", batch_id, exc)
            continue
        with fencing.unfenced(), store.begin() as conn:
            insert: Any = dialect_insert(conn, t.slack_updates)
            conn.execute(insert.values(batch_id=batch_id, stage="result", at=now)
                         .on_conflict_do_update(index_elements=["batch_id"],
                                                set_={"stage": "result", "at": now}))
        drawn.append(batch_id)
    return drawn
