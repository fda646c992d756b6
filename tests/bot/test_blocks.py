"""Block Kit builders are pure: assert on what they return, and on Slack's limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot import blocks
from bot.blocks import BatchView, DecisionView, DigestView, ItemView

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _batch(n: int, *, kind: str = "build", idle: int | None = 30,
           reason: str = "no use for 143 days") -> BatchView:
    items = tuple(ItemView(str(i), "payments/api", "sha256:" + f"{i:064x}", (f"build-{i}",),
                           288_372_093 if i % 2 else 300_000_000, (reason, "37 newer builds"))
                  for i in range(n))
    return BatchView("AbCdEf123456", "payments/api", kind, items, 12_400_000_000,
                     team="payments", idle_days=idle)


def _walk(obj: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        out.append(obj)
        for value in obj.values():
            out += _walk(value)
    elif isinstance(obj, list):
        for value in obj:
            out += _walk(value)
    return out


def _check_limits(message: dict[str, Any], max_blocks: int = blocks.MAX_BLOCKS) -> None:
    assert len(message["blocks"]) <= max_blocks
    assert len(message.get("text", "")) <= blocks.MAX_TEXT_FALLBACK
    for node in _walk(message["blocks"]):
        if node.get("type") == "section" and "text" in node:
            assert len(node["text"]["text"]) <= blocks.MAX_SECTION_CHARS
        if node.get("type") == "actions":
            assert len(node["elements"]) <= blocks.MAX_ACTIONS
        if node.get("type") == "button":
            assert len(node["value"]) <= blocks.MAX_BUTTON_VALUE
        if node.get("type") == "checkboxes":
            assert len(node["options"]) <= blocks.MAX_CHECKBOX_OPTIONS
    ids = [b["block_id"] for b in message["blocks"] if "block_id" in b]
    assert len(ids) == len(set(ids)), "block ids must be unique in a message"


def test_title_reads_like_a_sentence() -> None:
    assert blocks.title(_batch(43)) == "43 CI builds of payments/api idle 30+ days, 12.4 GB"
    assert blocks.title(_batch(1, kind="semver", idle=None)) == \
        "1 release of payments/api, 12.4 GB"
    assert blocks.title(_batch(2, kind="mystery", idle=None)).startswith("2 mystery images")


@pytest.mark.parametrize(("n", "expected"), [
    (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (12_400_000_000, "12.4 GB"),
    (3_100_000_000_000, "3.1 TB"), (9_000_000_000_000_000, "9000.0 TB"),
])
def test_human_bytes(n: int, expected: str) -> None:
    assert blocks.human_bytes(n) == expected


def test_batch_message_has_the_four_buttons_and_a_danger_confirm() -> None:
    message = blocks.batch_message(_batch(43))
    _check_limits(message)
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    by_id = {e["action_id"]: e for e in actions["elements"]}
    assert list(by_id) == ["tw_approve", "tw_deny", "tw_snooze", "tw_review"]
    approve = by_id["tw_approve"]
    assert approve["style"] == "danger" and approve["confirm"]["style"] == "danger"
    assert "43 manifests" in approve["confirm"]["text"]["text"]
    assert "12.4 GB" in approve["confirm"]["text"]["text"]
    # The button value is the opaque batch id, nothing else.
    assert {e["value"] for e in actions["elements"]} == {"AbCdEf123456"}
    text = json.dumps(message)
    assert "no use for 143 days; 37 newer builds" in text
    assert "and 33 more" in text  # top 10 shown


def test_huge_batches_and_long_words_stay_within_limits() -> None:
    batch = _batch(5000, reason="x" * 10_000)
    _check_limits(blocks.batch_message(batch))
    _check_limits(blocks.decided_message(batch, DecisionView("approved", ("U1",), 1, T0)))
    done = BatchView(batch.batch_id, batch.repository, batch.kind, tuple(
        ItemView(i.item_id, i.repository, i.digest, i.tags, i.bytes, i.reasons,
                 ("deleted", "skipped", "failed")[int(i.item_id) % 3], "tag moved " * 500)
        for i in batch.items), batch.total_bytes)
    result = blocks.result_message(done)
    _check_limits(result)
    assert result["text"].endswith("1667 deleted, 1666 failed, 1667 skipped")
    modal = blocks.review_modal(batch)
    _check_limits(modal, blocks.MAX_MODAL_BLOCKS)
    listed = sum(len(b["element"]["options"]) for b in modal["blocks"] if b["type"] == "input")
    assert listed + len(blocks.unlisted_item_ids(batch, modal)) == 5000


def test_decided_message_replaces_buttons_and_block_ids() -> None:
    batch = _batch(3)
    before = blocks.batch_message(batch)
    due = T0 + timedelta(hours=24)
    after = blocks.decided_message(batch, DecisionView("approved", ("U0ALICE",), 1, due))
    _check_limits(after)
    text = json.dumps(after)
    assert "Approved by <@U0ALICE>" in text and f"<!date^{int(due.timestamp())}^" in text
    assert "tw_cancel" in text and "tw_approve" not in text
    old_ids = {b.get("block_id") for b in before["blocks"]} - {None}
    new_ids = {b.get("block_id") for b in after["blocks"]} - {None}
    assert not old_ids & new_ids
    denied = json.dumps(blocks.decided_message(
        batch, DecisionView("denied", by="U0BOB", reason="<!channel> needed")))
    assert "tw_cancel" not in denied and "&lt;!channel&gt; needed" in denied


def test_two_person_rule_keeps_the_buttons_and_says_who_approved() -> None:
    message = blocks.batch_message(_batch(3), DecisionView("pending", ("U0ALICE",), 2))
    text = json.dumps(message)
    assert "Approved by <@U0ALICE> (1 of 2)" in text and "tw_approve" in text


def test_result_message_lists_skips_first_with_their_reason() -> None:
    items = (ItemView("1", "p/a", "sha256:" + "a" * 64, ("v1",), 100, state="deleted"),
             ItemView("2", "p/a", "sha256:" + "b" * 64, ("v2",), 200, state="skipped",
                      detail="tag v2 moved"),
             ItemView("3", "p/a", "sha256:" + "c" * 64, ("v3",), 300, state="failed",
                      detail="registry answered 500"))
    message = blocks.result_message(BatchView("B1", "p/a", "semver", items, 600))
    sections = [b["text"]["text"] for b in message["blocks"] if b["type"] == "section"]
    assert "1 deleted, 1 failed, 1 skipped; 100 B to be freed" in sections[0]
    assert "failed" in sections[1] and "registry answered 500" in sections[1]
    assert "tag v2 moved" in sections[2]


def test_review_modal_ticks_everything_and_reads_back_the_ticks() -> None:
    modal = blocks.review_modal(_batch(12))
    groups = [b for b in modal["blocks"] if b["type"] == "input"]
    assert [len(g["element"]["options"]) for g in groups] == [10, 2]
    assert all(g["element"]["initial_options"] == g["element"]["options"] for g in groups)
    values = {g["block_id"]: {"keep": {"selected_options": g["element"]["options"][:1]}}
              for g in groups}
    assert len(blocks.checked_item_ids(values)) == 2
    assert json.loads(modal["private_metadata"]) == {"batch_id": "AbCdEf123456"}


def test_digest_of_ten_thousand_batches_stays_within_limits() -> None:
    view = DigestView("payments", T0 - timedelta(days=7), T0, 10**13, 10_000, 10_000, 5 * 10**9,
                      12, 40, 3, (("tag moved", 2),), ("payments/api (build): demo",), "m-1",
                      0.973, tuple(f"• *payments/svc-{n}* — 1 build manifest, 1.0 GB"
                                   for n in range(10_000)),
                      surprises=("payments/api:v1 asked for 2 times after its deletion",))
    summary = blocks.digest_summary(view)
    _check_limits(summary)
    text = json.dumps(summary)
    assert "10.0 TB" in text and "97%" in text and "demo" in text
    assert "surprise: payments/api:v1 asked for 2 times" in text
    pages = blocks.digest_pages(view)
    assert len(pages) == blocks.MAX_DIGEST_PAGES
    for page in pages:
        _check_limits(page)
    assert "9700 more batches" in json.dumps(pages[-1])


def test_unknown_sizes_read_as_unknown_not_zero() -> None:
    """No scan yet: the store knows no layer sizes; Slack must not promise '0 B'."""
    from bot.batches import to_views

    row = {"id": "b1", "repository": "payments/api", "kind": "build", "team": "payments",
           "state": "pending", "min_approvals": 1, "due_at": None, "decided_by": None,
           "reason": None, "snoozed_until": None}
    item = {"id": 1, "repository": "payments/api", "digest": "sha256:" + "a" * 64,
            "tags": ["build-1"], "reclaimable_bytes": None, "reasons": ["idle"],
            "state": "suggested", "skipped_reason": None, "result": None}
    view, _ = to_views(row, [item], [])
    assert view.total_bytes is None and view.items[0].bytes is None
    text = json.dumps(blocks.batch_message(view))
    assert "size unknown" in blocks.title(view) and "size unknown" in text
    assert "0 B" not in text
    assert blocks.human_bytes(None) == "size unknown"
    assert blocks.human_bytes(850_000) == "850.0 kB"
