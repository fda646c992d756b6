"""Block Kit messages and modals, built by pure functions from plain records.

Nothing here talks to Slack or the store: listeners and posting turn store rows into
:class:`BatchView` / :class:`ItemView` and send what these functions return, and tests assert on
it. Slack's limits are enforced here (and tested): at most 50 blocks per message, 3000
characters per section text, 2000 per button value (ours carry only the opaque batch id),
25 elements per actions block, 10 options per check-box group, 100 blocks per modal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from recommender.decisions import BatchState, ItemState
from recommender.sizes import human_bytes

__all__ = [
    "ACTION_APPROVE",
    "ACTION_CANCEL",
    "ACTION_DENY",
    "ACTION_REVIEW",
    "ACTION_SNOOZE",
    "MAX_BLOCKS",
    "MAX_SECTION_CHARS",
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
    "result_message",
    "review_modal",
    "title",
]

MAX_BLOCKS = 50
MAX_MODAL_BLOCKS = 100
MAX_SECTION_CHARS = 3000
MAX_BUTTON_VALUE = 2000
MAX_ACTIONS = 25
MAX_CHECKBOX_OPTIONS = 10
MAX_TEXT_FALLBACK = 3000
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


# --- small pieces ------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    # mrkdwn control characters; user-visible names never become mentions or links.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _section(text: str, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section",
                             "text": {"type": "mrkdwn", "text": _clip(text, MAX_SECTION_CHARS)}}
    if block_id:
        block["block_id"] = block_id
    return block


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, 2000)}]}


def _plain(text: str, limit: int = 75) -> dict[str, Any]:
    return {"type": "plain_text", "text": _clip(text, limit), "emoji": True}


def _button(text: str, action_id: str, value: str, style: str | None = None,
            confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    if len(value) > MAX_BUTTON_VALUE:
        raise ValueError("a button value carries an opaque id, never data")
    button: dict[str, Any] = {"type": "button", "text": _plain(text), "action_id": action_id,
                              "value": value}
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


def _actions(block_id: str, elements: Sequence[dict[str, Any]]) -> dict[str, Any]:
    assert len(elements) <= MAX_ACTIONS
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}


def _when(at: datetime) -> str:
    # Slack renders the token in each reader's time zone; the fallback is UTC.
    fallback = at.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


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


def _finish(text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(blocks) <= MAX_BLOCKS, f"{len(blocks)} blocks"
    return {"text": _clip(text, MAX_TEXT_FALLBACK), "blocks": blocks}


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
        _section(f"Done: {summary}; {human_bytes(freed)} now eligible for garbage collection."
                 + who, f"r-{bid}-summary"),
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


def pages(lines: Iterable[str], per_page: int = 15) -> list[list[str]]:
    """Split lines into pages of ``per_page`` (digest threads)."""
    out: list[list[str]] = []
    for line in lines:
        if not out or len(out[-1]) >= per_page:
            out.append([])
        out[-1].append(line)
    return out


# --- the weekly digest -------------------------------------------------------------------------

MAX_DIGEST_PAGES = 20


@dataclass(frozen=True)
class DigestView:
    """What the weekly digest of one team says; built from the store by :mod:`bot.digest`."""

    team: str
    week_start: datetime
    now: datetime
    reclaimable_bytes: int  # in batches waiting for approval
    pending_batches: int
    pending_items: int
    reclaimed_bytes: int  # deleted last week
    deleted_items: int
    approved_items: int  # approved last week (the model was right)
    denied_items: int  # denied last week (the model was wrong)
    skipped: tuple[tuple[str, int], ...] = ()  # (reason, count) at the last re-check
    denials: tuple[str, ...] = ()  # "payments/api CI builds: demo on Friday"
    model_version: str | None = None
    model_precision: float | None = None
    lines: tuple[str, ...] = ()  # one per pending batch, largest first
    surprises: tuple[str, ...] = ()  # deleted, then asked for again


def digest_summary(d: DigestView) -> dict[str, Any]:
    week = f"{d.week_start:%b %d} – {d.now:%b %d}"
    decided = d.approved_items + d.denied_items
    right = (f"{d.approved_items} of {decided} suggestions decided last week were approved"
             if decided else "no suggestions were decided last week")
    model = (f"model `{d.model_version}`, measured precision {d.model_precision:.0%}"
             if d.model_version and d.model_precision is not None
             else "no trained model yet: suggestions come from the rules alone")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "block_id": "digest-head",
         "text": _plain(f"tagwarden weekly digest for {d.team}", 150)},
        {"type": "section", "block_id": "digest-figures", "fields": [
            {"type": "mrkdwn", "text": f"*Reclaimable now*\n{human_bytes(d.reclaimable_bytes)}"},
            {"type": "mrkdwn", "text": f"*Reclaimed {week}*\n{human_bytes(d.reclaimed_bytes)} "
                                       f"({d.deleted_items} manifests)"},
            {"type": "mrkdwn", "text": f"*Waiting for approval*\n{d.pending_batches} batches, "
                                       f"{d.pending_items} manifests"},
            {"type": "mrkdwn", "text": f"*Model*\n{model}"},
        ]},
        _section(f"*How the suggestions fared:* {right}.", "digest-fared"),
    ]
    wrong: list[str] = [f"• surprise: {_escape(x)}" for x in d.surprises[:10]]
    if d.denials:
        wrong += [f"• denied: {_escape(x)}" for x in d.denials[:10]]
        if len(d.denials) > 10:
            wrong.append(f"• … and {len(d.denials) - 10} more denials")
    wrong += [f"• skipped at the last check ({n}): {_escape(reason)}"
              for reason, n in d.skipped[:10]]
    if wrong:
        blocks.append(_section("*Where it was wrong or surprised:*\n" + "\n".join(wrong),
                               "digest-wrong"))
    if d.lines:
        shown = min(len(d.lines), MAX_DIGEST_PAGES * 15)
        blocks.append(_context(f"{len(d.lines)} batches wait for a decision; the "
                               f"{'largest ' + str(shown) if shown < len(d.lines) else 'list'}"
                               " follows in the thread."))
    return _finish(f"tagwarden weekly digest for {d.team}: {human_bytes(d.reclaimable_bytes)} "
                   f"reclaimable, {human_bytes(d.reclaimed_bytes)} reclaimed last week", blocks)


def digest_pages(d: DigestView, per_page: int = 15) -> list[dict[str, Any]]:
    """Thread replies listing the waiting batches, ``per_page`` lines each, capped."""
    lines = [_clip(line, MAX_SECTION_CHARS // per_page - 1)
             for line in d.lines[:MAX_DIGEST_PAGES * per_page]]
    chunks = pages(lines, per_page)
    out = []
    for n, chunk in enumerate(chunks, 1):
        tail = ""
        if n == len(chunks) and len(d.lines) > len(lines):
            tail = f"\n… and {len(d.lines) - len(lines)} more batches (`/tagwarden status`)."
        out.append(_finish(f"Waiting for a decision, page {n} of {len(chunks)}", [
            _section("\n".join(chunk) + tail, f"digest-page-{n}"),
            _context(f"page {n} of {len(chunks)}"),
        ]))
    return out
