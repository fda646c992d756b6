"""A faithful text mock-up of a Slack message from its Block Kit: every block the bot sent,
in order, as Slack lays it out (header in bold, sections' mrkdwn, context lines small,
dividers, buttons in brackets). Slack's mrkdwn is close to Markdown; links ``<url|text>`` and
mentions ``<@U…>`` are rewritten so the mock-up reads well on GitHub."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["render_markdown"]

_LINK = re.compile(r"<(https?://[^|>]+)\|([^>]+)>")
_MENTION = re.compile(r"<@([A-Z0-9]+)>")


def _text(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    text = _LINK.sub(r"[\2](\1)", text)
    text = _MENTION.sub(r"@\1", text)
    if obj.get("type") == "mrkdwn":
        # Slack's *bold* and ~strike~ are Markdown's **bold** and ~~strike~~.
        text = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"**\1**", text)
        text = re.sub(r"(?<![\w~])~([^~\n]+)~(?![\w~])", r"~~\1~~", text)
    return text


def _quote(text: str) -> list[str]:
    return [f"> {line}" if line else ">" for line in text.splitlines()] or [">"]


def render_markdown(blocks: list[dict[str, Any]]) -> str:
    """The message as Markdown lines in a block quote (one Slack message = one quote)."""
    out: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            out += _quote(f"### {_text(block.get('text'))}")
        elif kind == "section":
            if block.get("text"):
                out += _quote(_text(block["text"]))
            for f in block.get("fields") or []:
                out += _quote(_text(f))
            accessory = block.get("accessory")
            if isinstance(accessory, dict) and accessory.get("type") == "button":
                out += _quote(f"`[ {_text(accessory.get('text'))} ]`")
        elif kind == "context":
            texts = [_text(e) for e in block.get("elements") or []]
            out += _quote(" · ".join(f"<sub>{t}</sub>" for t in texts if t))
        elif kind == "divider":
            out += _quote("---")
        elif kind == "actions":
            buttons = [f"`[ {_text(e.get('text'))} ]`" for e in block.get("elements") or []
                       if e.get("type") == "button"]
            out += _quote("  ".join(buttons))
        out.append(">")
    while out and out[-1] == ">":
        out.pop()
    return "\n".join(out) + "\n"
