"""Block Kit pieces shared by every message and modal: Slack's limits and the small element
builders that enforce them (text is clipped, button values stay opaque ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

__all__ = [
    "MAX_ACTIONS",
    "MAX_BLOCKS",
    "MAX_BUTTON_VALUE",
    "MAX_CHECKBOX_OPTIONS",
    "MAX_MODAL_BLOCKS",
    "MAX_SECTION_CHARS",
    "MAX_TEXT_FALLBACK",
    "pages",
]

MAX_BLOCKS = 50
MAX_MODAL_BLOCKS = 100
MAX_SECTION_CHARS = 3000
MAX_BUTTON_VALUE = 2000
MAX_ACTIONS = 25
MAX_CHECKBOX_OPTIONS = 10
MAX_TEXT_FALLBACK = 3000


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


def _finish(text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(blocks) <= MAX_BLOCKS, f"{len(blocks)} blocks"
    return {"text": _clip(text, MAX_TEXT_FALLBACK), "blocks": blocks}


def pages(lines: Iterable[str], per_page: int = 15) -> list[list[str]]:
    """Split lines into pages of ``per_page`` (digest threads)."""
    out: list[list[str]] = []
    for line in lines:
        if not out or len(out[-1]) >= per_page:
            out.append([])
        out[-1].append(line)
    return out
