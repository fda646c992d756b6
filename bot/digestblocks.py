"""The weekly digest as Block Kit: the summary message and the thread pages listing the batches
that wait for a decision. Built from a :class:`DigestView`, which :mod:`bot.digest` fills from
the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from recommender.sizes import human_bytes

from .blockkit import MAX_SECTION_CHARS, _clip, _context, _escape, _finish, _plain, _section, pages

__all__ = ["MAX_DIGEST_PAGES", "DigestView", "digest_pages", "digest_summary"]

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
