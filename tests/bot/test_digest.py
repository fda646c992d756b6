"""The weekly digest, built from the store and posted as a summary plus threaded pages."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from slack_sdk import WebClient

from bot.digest import build_digest, post_digest
from recommender import decisions
from recommender.store import Store
from recommender.store import tables as t
from tests.support.fake_slack import FakeSlack

from .helpers import T0, TOKEN, Suggestion, digest, make_config


def test_digest_counts_pending_denied_and_approved_and_names_the_model(
        store: Store, fake_slack: FakeSlack, tmp_path: Path) -> None:
    config = make_config(tmp_path, fake_slack.api_url)
    week_ago = T0 - timedelta(days=3)
    old = decisions.record_batches(store, [
        Suggestion("payments/api", digest(1)), Suggestion("payments/api", digest(2)),
        Suggestion("payments/web", digest(3), kind="semver"),
    ], now=week_ago - timedelta(days=1), config=config)
    by_repo = {b.repository: b for b in old}
    decisions.deny(store, batch_id=by_repo["payments/web"].id, user_id="U0BOB", now=week_ago,
                   reason="still in the demo")
    decisions.approve(store, batch_id=by_repo["payments/api"].id, user_id="U0ALICE",
                      now=week_ago)
    decisions.record_batches(store, [Suggestion("payments/worker", digest(n),
                                                reclaimable_bytes=1_000_000_000)
                                     for n in range(10, 14)], now=T0, config=config)
    with store.begin() as conn:
        conn.execute(t.models.insert().values(
            id="m-20260301", created_at=T0, trained_at=T0, horizon_days=90.0, path="/x.joblib",
            sha256="0" * 64, threshold=0.8, metrics={"validation": {"precision": 0.973}},
            status="promoted", promoted_at=T0))
    with store.connect() as conn:
        view = build_digest(conn, config, "payments", now=T0 + timedelta(minutes=1))
    assert (view.pending_batches, view.pending_items) == (1, 4)
    assert view.reclaimable_bytes == 4_000_000_000
    assert (view.approved_items, view.denied_items) == (2, 1)
    assert view.denials == ("payments/web (semver): still in the demo",)
    assert (view.model_version, view.model_precision) == ("m-20260301", 0.973)
    assert view.lines == ("• *payments/worker* — 4 build manifests, 4.0 GB",)


def test_digest_posts_a_summary_and_threaded_pages(
        store: Store, fake_slack: FakeSlack, tmp_path: Path) -> None:
    config = make_config(tmp_path, fake_slack.api_url)
    decisions.record_batches(store, [Suggestion(f"payments/svc-{n:02d}", digest(n))
                                     for n in range(40)], now=T0, config=config)
    report = post_digest(store, config, team="payments", now=T0,
                         client=WebClient(token=TOKEN, base_url=fake_slack.api_url))
    posts = fake_slack.calls("chat.postMessage")
    assert len(posts) == 4 and report.pages_posted == 3  # 40 batches, 15 a page
    summary, pages = posts[0], posts[1:]
    assert "thread_ts" not in summary.args and summary.args["channel"] == "C0PAYMENTS"
    assert all(p.args["thread_ts"] == report.ts for p in pages)
    listed = "".join(json.dumps(p.blocks) for p in pages)
    assert all(f"payments/svc-{n:02d}" in listed for n in range(40))
    assert "12.4 GB" in json.dumps(summary.blocks)  # 40 x 310 MB


def test_dry_run_builds_without_posting(store: Store, fake_slack: FakeSlack,
                                        tmp_path: Path) -> None:
    config = make_config(tmp_path, fake_slack.api_url)
    report = post_digest(store, config, team="payments", now=T0, client=None, dry_run=True)
    assert report.ts is None and len(report.messages) == 1
    assert not fake_slack.requests


def test_digest_says_size_unknown_before_any_scan(store: Store, fake_slack: FakeSlack,
                                                  tmp_path: Path) -> None:
    config = make_config(tmp_path, fake_slack.api_url)
    decisions.record_batches(store, [Suggestion("payments/api", digest(n),
                                                reclaimable_bytes=None)  # type: ignore[arg-type]
                                     for n in (1, 2)], now=T0, config=config)
    with store.connect() as conn:
        view = build_digest(conn, config, "payments", now=T0 + timedelta(minutes=1))
    assert view.lines == ("• *payments/api* — 2 build manifests, size unknown",)
