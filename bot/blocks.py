"""Block Kit messages and modals, built by pure functions from plain records.

Nothing here talks to Slack or the store: listeners and posting turn store rows into
:class:`BatchView` / :class:`ItemView` and send what these functions return, and tests assert on
it. Slack's limits are enforced here (and tested): at most 50 blocks per message, 3000
characters per section text, 2000 per button value (ours carry only the opaque batch id),
25 elements per actions block, 10 options per check-box group, 100 blocks per modal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from recommender.batchstate import BatchState, ItemState
from recommender.sizes import human_bytes

from .blockkit import (
    MAX_ACTIONS,
    MAX_BLOCKS,
    MAX_BUTTON_VALUE,
    MAX_CHECKBOX_OPTIONS,
    MAX_MODAL_BLOCKS,
    MAX_SECTION_CHARS,
    MAX_TEXT_FALLBACK,
    _actions,
    _button,
    _clip,
    _context,
    _escape,
    _finish,
    _plain,
    _section,
    _short,
    _when,
    pages,
)
from .digestblocks import MAX_DIGEST_PAGES, DigestView, digest_pages, digest_summary

__all__ = [
    "ACTION_APPROVE",
    "ACTION_CANCEL",
    "ACTION_DENY",
    "ACTION_REVIEW",
    "ACTION_SNOOZE",
    "MAX_ACTIONS",
    "MAX_BLOCKS",
    "MAX_BUTTON_VALUE",
    "MAX_CHECKBOX_OPTIONS",
    "MAX_DIGEST_PAGES",
    "MAX_MODAL_BLOCKS",
    "MAX_SECTION_CHARS",
    "MAX_TEXT_FALLBACK",
    "VIEW_DENY",
    "VIEW_REVIEW",
    "BatchView",
    "DecisionView",
    "DigestView",
    "ItemView",
    "batch_message",
    "decided_message",
    "deny_modal",
    "digest_pages",
    "digest_summary",
    "ephemeral",
    "human_bytes",
    "pages",
    "result_message",
    "review_modal",
    "title",
]

TOP_ITEMS = 10

ACTION_APPROVE = "tw_approve"
ACTION_DENY = "tw_deny"
ACTION_SNOOZE = "tw_snooze"
ACTION_REVIEW = "tw_review"
ACTION_CANCEL = "tw_cancel"
VIEW_DENY = "tw_deny_reason"
VIEW_REVIEW = "tw_review_items"

# Batch kinds (recommender.tagkind) as people say them; unknown kinds read "<kind> images".
_KIND_NOUNS = {
    "semver": "releases",
    "prerelease": "pre-releases",
    "commit": "commit builds",
    "build": "CI builds",
    "date": "dated builds",
    "branch": "branch builds",
    "pr": "pull-request builds",
    "floating": "floating-tag images",
    "test": "test images",
    "signature": "signatures",
    "untagged": "untagged manifests",
    "other": "images",
}


@dataclass(frozen=True)
class ItemView:
    """One proposed deletion as shown: ``item_id`` is opaque (the store's item id)."""

    item_id: str
    repository: str
    digest: str
    tags: tuple[str, ...] = ()
    bytes: int | None = 0  # None: the store knows no size (no scan yet)
    reasons: tuple[str, ...] = ()
    state: str = "pending"
    detail: str | None = None  # result detail: skip reason, error


@dataclass(frozen=True)
class BatchView:
    batch_id: str
    repository: str
    kind: str
    items: tuple[ItemView, ...]
    total_bytes: int | None  # reclaimable, layer-deduplicated; None: no size known
    team: str = ""
    idle_days: int | None = None


@dataclass(frozen=True)
class DecisionView:
    """Where a batch stands: ``state`` pending|approved|denied|snoozed|cancelled|done."""

    state: str
    approvals: tuple[str, ...] = ()
    needed: int = 1
    due_at: datetime | None = None
    by: str | None = None  # who denied/snoozed/cancelled
    reason: str | None = None
    until: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _item_line(item: ItemView, with_reasons: bool = True) -> str:
    tags = ", ".join(f"`{_escape(t)}`" for t in item.tags[:5]) or "_untagged_"
    if len(item.tags) > 5:
        tags += f" +{len(item.tags) - 5}"
    line = f"{tags} · `{_short(item.digest)}` · {human_bytes(item.bytes)}"
    if with_reasons and item.reasons:
        line += "\n_" + _escape("; ".join(item.reasons)) + "_"
    return line


def title(batch: BatchView) -> str:
    """'43 CI builds of payments/api idle 30+ days, ' and their total size (decimal units)."""
    noun = _KIND_NOUNS.get(batch.kind, f"{batch.kind} images")
    if len(batch.items) == 1 and noun.endswith("s"):
        noun = noun[:-1]
    idle = f" idle {batch.idle_days}+ days" if batch.idle_days else ""
    return (f"{len(batch.items)} {noun} of {batch.repository}{idle}, "
            f"{human_bytes(batch.total_bytes)}")


def _items_blocks(batch: BatchView, prefix: str, limit: int = TOP_ITEMS) -> list[dict[str, Any]]:
    ranked = sorted(batch.items, key=lambda i: (-(i.bytes or 0), i.digest))
    blocks = [_section(_item_line(i), f"{prefix}-item-{n}") for n, i in enumerate(ranked[:limit])]
    if len(ranked) > limit:
        blocks.append(_context(f"… and {len(ranked) - limit} more; *Review items* lists them all."))
    return blocks


# --- messages ----------------------------------------------------------------------------------


def batch_message(batch: BatchView, decision: DecisionView | None = None) -> dict[str, Any]:
    """The suggestion batch with Approve / Deny / Snooze / Review items."""
    head = title(batch)
    bid = batch.batch_id
    count, size = len(batch.items), human_bytes(batch.total_bytes)
    for_team = f" for *{_escape(batch.team)}*" if batch.team else ""
    confirm = {
        "title": _plain("Approve the deletion?", 100),
        "text": {"type": "mrkdwn", "text": _clip(
            f"Delete {count} manifest{'s' if count != 1 else ''} of {batch.repository} "
            f"({size}) after the cooling-off period. Anyone can cancel until then.", 300)},
        "confirm": _plain(f"Delete {count} ({size})", 30),
        "deny": _plain("Keep them", 30),
        "style": "danger",
    }
    blocks: list[dict[str, Any]] = [
        {"type": "header", "block_id": f"b-{bid}-head", "text": _plain(head, 150)},
        _section(f"Suggested for deletion by tagwarden{for_team}: {count} "
                 f"manifest{'s' if count != 1 else ''}, {size} reclaimable.",
                 f"b-{bid}-summary"),
        {"type": "divider"},
        *_items_blocks(batch, f"b-{bid}"),
    ]
    if decision is not None and decision.approvals:
        who = ", ".join(f"<@{u}>" for u in decision.approvals)
        blocks.append(_context(f"Approved by {who} ({len(decision.approvals)} of "
                               f"{decision.needed}); waiting for another approver."))
    blocks.append(_actions(f"b-{bid}-actions-{len(decision.approvals) if decision else 0}", [
        _button("Approve", ACTION_APPROVE, bid, "danger", confirm),
        _button("Deny", ACTION_DENY, bid),
        _button("Snooze 7 days", ACTION_SNOOZE, bid),
        _button("Review items", ACTION_REVIEW, bid),
    ]))
    return _finish(head, blocks)


def decided_message(batch: BatchView, decision: DecisionView) -> dict[str, Any]:
    """The message after a decision: who, when the deletion runs, Cancel until then.

    Block ids change with the state so Slack redraws the message instead of keeping old inputs.
    """
    head = title(batch)
    bid, state = batch.batch_id, decision.state
    blocks: list[dict[str, Any]] = [
        {"type": "header", "block_id": f"d-{bid}-{state}-head", "text": _plain(head, 150)},
    ]
    actions: list[dict[str, Any]] = []
    if state == BatchState.APPROVED:
        who = ", ".join(f"<@{u}>" for u in decision.approvals) or "someone"
        when = _when(decision.due_at) if decision.due_at else "after the cooling-off"
        blocks.append(_section(f":white_check_mark: Approved by {who}. Deletion runs {when}; "
                               "anyone can cancel until then.", f"d-{bid}-{state}-who"))
        actions.append(_button("Cancel", ACTION_CANCEL, bid))
    elif state == BatchState.DENIED:
        why = f" Reason: _{_escape(decision.reason)}_" if decision.reason else ""
        blocks.append(_section(f":no_entry_sign: Denied by <@{decision.by}>. Nothing will be "
                               f"deleted; tagwarden learns these are still needed.{why}",
                               f"d-{bid}-{state}-who"))
    elif state == BatchState.SNOOZED:
        until = _when(decision.until) if decision.until else "later"
        blocks.append(_section(f":zzz: Snoozed by <@{decision.by}> until {until}.",
                               f"d-{bid}-{state}-who"))
    elif state == BatchState.CANCELLED:
        blocks.append(_section(f":leftwards_arrow_with_hook: Cancelled by <@{decision.by}>. "
                               "Nothing will be deleted.", f"d-{bid}-{state}-who"))
    else:
        blocks.append(_section(f"State: {state}.", f"d-{bid}-{state}-who"))
    blocks.append({"type": "divider"})
    blocks.extend(_items_blocks(batch, f"d-{bid}-{state}"))
    if actions:
        blocks.append(_actions(f"d-{bid}-{state}-actions", actions))
    return _finish(f"{head}: {state}", blocks)


_RESULT_ICONS: dict[str, str] = {ItemState.DELETED: ":wastebasket:",
                                  ItemState.SKIPPED: ":fast_forward:", ItemState.FAILED: ":x:"}


def result_message(batch: BatchView, decision: DecisionView | None = None) -> dict[str, Any]:
    """The final message: per item deleted / skipped (with the reason) / failed."""
    head = title(batch)
    bid = batch.batch_id
    counts: dict[str, int] = {}
    freed = 0
    for item in batch.items:
        counts[item.state] = counts.get(item.state, 0) + 1
        if item.state == ItemState.DELETED:
            freed += item.bytes or 0
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    who = ""
    if decision is not None and decision.approvals:
        who = " Approved by " + ", ".join(f"<@{u}>" for u in decision.approvals) + "."
    blocks: list[dict[str, Any]] = [
        {"type": "header", "block_id": f"r-{bid}-head", "text": _plain(head, 150)},
        # The registry says when space returns (at once on ECR, after garbage collection on
        # Distribution); the message must be true for both.
        _section(f"Done: {summary}; {human_bytes(freed)} to be freed as the registry "
                 "reclaims space." + who, f"r-{bid}-summary"),
        {"type": "divider"},
    ]
    # Skipped and failed first: those are what a reader must look at.
    order: dict[str, int] = {ItemState.FAILED: 0, ItemState.SKIPPED: 1, ItemState.DELETED: 2}
    ranked = sorted(batch.items, key=lambda i: (order.get(i.state, 3), -(i.bytes or 0), i.digest))
    room = MAX_BLOCKS - len(blocks) - 1
    for n, item in enumerate(ranked[:room]):
        icon = _RESULT_ICONS.get(item.state, ":grey_question:")
        detail = f" — {_escape(item.detail)}" if item.detail else ""
        blocks.append(_section(f"{icon} *{item.state}*{detail}\n{_item_line(item, False)}",
                               f"r-{bid}-item-{n}"))
    if len(ranked) > room:
        blocks.append(_context(f"… and {len(ranked) - room} more (see `tagwarden audit export`)."))
    return _finish(f"{head}: {summary}", blocks)


def ephemeral(text: str) -> dict[str, Any]:
    return {"text": _clip(text, MAX_TEXT_FALLBACK), "blocks": [_section(text)]}


# --- modals ------------------------------------------------------------------------------------


def deny_modal(batch: BatchView) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": VIEW_DENY,
        "private_metadata": json.dumps({"batch_id": batch.batch_id}),
        "title": _plain("Deny deletion", 24),
        "submit": _plain("Deny", 24),
        "close": _plain("Back", 24),
        "blocks": [
            _section(f"Keep {_escape(title(batch))}?"),
            {"type": "input", "block_id": "reason", "optional": True,
             "label": _plain("Why are they still needed? (optional)", 2000),
             "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True,
                         "max_length": 500}},
        ],
    }


def review_modal(batch: BatchView) -> dict[str, Any]:
    """Check boxes (all ticked) to drop single items before approving."""
    ranked = sorted(batch.items, key=lambda i: (-(i.bytes or 0), i.digest))
    blocks: list[dict[str, Any]] = [
        _section(f"Untick what must stay, then *Approve the rest*. {_escape(title(batch))}."),
    ]
    room = (MAX_MODAL_BLOCKS - 2) * MAX_CHECKBOX_OPTIONS
    shown = ranked[:room]
    for start in range(0, len(shown), MAX_CHECKBOX_OPTIONS):
        chunk = shown[start:start + MAX_CHECKBOX_OPTIONS]
        options = [{"text": {"type": "mrkdwn", "text": _clip(_item_line(i), 150)},
                    "value": i.item_id} for i in chunk]
        blocks.append({"type": "input", "block_id": f"items-{start // MAX_CHECKBOX_OPTIONS}",
                       "optional": True, "label": _plain(f"Items {start + 1}–{start + len(chunk)}"),
                       "element": {"type": "checkboxes", "action_id": "keep", "options": options,
                                   "initial_options": options}})
    if len(ranked) > len(shown):
        blocks.append(_context(f"{len(ranked) - len(shown)} more items are not listed and stay "
                               "in the batch."))
    return {
        "type": "modal",
        "callback_id": VIEW_REVIEW,
        "private_metadata": json.dumps({"batch_id": batch.batch_id}),
        "title": _plain("Review items", 24),
        "submit": _plain("Approve the rest", 24),
        "close": _plain("Back", 24),
        "blocks": blocks,
    }


def checked_item_ids(state_values: dict[str, Any]) -> list[str]:
    """The item ids still ticked in a submitted review modal's ``view.state.values``."""
    ids: list[str] = []
    for block_id, actions in state_values.items():
        if block_id.startswith("items-"):
            ids += [o["value"] for o in (actions.get("keep", {}).get("selected_options") or [])]
    return ids


def unlisted_item_ids(batch: BatchView, modal: dict[str, Any]) -> list[str]:
    """Items that did not fit in the modal (they stay in the batch)."""
    listed: set[str] = set()
    for block in modal["blocks"]:
        if block.get("type") == "input" and block["element"]["type"] == "checkboxes":
            listed.update(o["value"] for o in block["element"]["options"])
    return [i.item_id for i in batch.items if i.item_id not in listed]

