"""From a click to an empty registry slot: approve over HTTP, cooling-off on an injected clock,
the scheduler's execute job deletes from the real docker-registry, and the Slack message ends
with the result."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

from bot.digest import build_digest
from recommender import decisions
from recommender.collector.events import Event
from recommender.collector.writer import EventWriter
from recommender.registry.local import LocalRegistry
from recommender.registry.push import PushedImage, push_image
from recommender.registry.sync import RegistryClient
from recommender.scheduler import Scheduler, default_jobs
from recommender.store import Store, dialect_insert
from recommender.store import tables as t

from .conftest import Bot
from .helpers import Suggestion, click_payload, form, post_signed

POLICY = """
[registry]
url = "{url}"

[[policy]]
repositories = ["*"]
protected_tags = ["latest"]
keep_production = 0
keep_other = 0
min_age = "0s"
keep_deployed_within = "0s"
"""


def _record(store: Store, image: PushedImage, tags: list[str], bot: Bot) -> None:
    """What an inventory scan writes: the manifest, its blobs, its tags."""
    seen = bot.clock() - timedelta(days=30)
    with store.begin() as conn:
        conn.execute(t.manifests.insert().values(
            repository=image.repository, digest=image.digest, media_type=image.media_type,
            size=image.size, total_bytes=image.size + sum(image.blobs.values()),
            first_seen=seen, last_scanned=seen, is_index=False))
        for blob, size in image.blobs.items():
            insert = dialect_insert(conn, t.blobs)
            conn.execute(insert.values(digest=blob, size=size).on_conflict_do_nothing())  # type: ignore[attr-defined]
            conn.execute(t.manifest_blobs.insert().values(
                repository=image.repository, digest=image.digest, blob=blob))
        for tag in tags:
            conn.execute(t.tag_history.insert().values(
                repository=image.repository, tag=tag, digest=image.digest, valid_from=seen,
                source="scan"))


def test_approve_cool_off_execute_and_the_message_shows_the_result(
        bot_factory: Callable[..., Bot], registry: LocalRegistry) -> None:
    bot = bot_factory(extra=POLICY.format(url=registry.url))
    client = RegistryClient(registry.url)
    try:
        old = push_image(client, "payments/api", "build-1", layers=[3000], seed="old")
        keep = push_image(client, "payments/api", "build-2", layers=[5000], seed="keep")
        _record(bot.store, old, ["build-1"], bot)
        _record(bot.store, keep, ["build-2"], bot)
        [batch] = decisions.record_batches(bot.store, [Suggestion(
            "payments/api", old.digest, ["build-1"], reclaimable_bytes=old.size + 3000)],
            now=bot.clock(), config=bot.config)
        decisions.set_posted(bot.store, batch_id=batch.id, channel="C0PAYMENTS",
                             ts="1700000001.000100", now=bot.clock())

        body = form(click_payload("tw_approve", batch.id, response_url=bot.fake.response_url()))
        assert post_signed(bot.events_url, body).status_code == 200
        [decided] = bot.fake.wait_for("chat.update")
        assert "Approved by <@U0ALICE>" in json.dumps(decided.blocks)

        scheduler = Scheduler(bot.config, bot.store, clock=bot.clock,
                              jobs=default_jobs(bot.config, bot.store))
        bot.clock.advance(timedelta(hours=23))  # still cooling off
        assert scheduler.run_job("execute").outcomes == []
        assert client.head_manifest("payments/api", old.digest) == old.digest

        bot.clock.advance(timedelta(hours=2))
        report = scheduler.run_job("execute")
        assert [o.outcome for o in report.outcomes] == ["deleted"]
        assert client.head_manifest("payments/api", old.digest) is None
        assert client.head_manifest("payments/api", keep.digest) == keep.digest
        assert client.list_tags("payments/api") == ["build-2"]

        updates = bot.fake.wait_for("chat.update", 2)
        final = updates[-1]
        assert final.args["ts"] == "1700000001.000100"
        text = json.dumps(final.blocks)
        assert "1 deleted" in text and "tw_cancel" not in text

        scheduler.run_job("execute")  # nothing due; the result is not drawn twice
        assert len(bot.fake.calls("chat.update")) == 2

        # Somebody still pulls it after the deletion: the weekly digest calls it a surprise.
        asked = bot.clock() + timedelta(hours=1)
        EventWriter(bot.store).write([Event(
            time=asked, source="distribution", source_event_id="after-delete-1", action="pull",
            usage="use", repository="payments/api", digest=old.digest, method="GET",
            user_agent="containerd/1.7")], now=asked)
        with bot.store.connect() as conn:
            week = build_digest(conn, bot.config, "payments", now=asked + timedelta(days=1))
        assert week.deleted_items == 1 and week.reclaimed_bytes > 0
        assert week.surprises == ("payments/api:build-1 asked for 1 time after its deletion",)
    finally:
        client.close()
