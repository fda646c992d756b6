"""The slash command ``/tagwarden status | suggest <repo> | why <repo>@<digest>``.

Answers are ephemeral (only the caller sees them). ``status`` reads the store and answers in
the acknowledgement; ``suggest`` and ``why`` run the model, which can take longer than Slack's
3 s, so they acknowledge first and answer through the ``response_url``.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from slack_bolt import Ack, App, Respond
from sqlalchemy import func, select

from recommender.decisions import BatchState, ItemState
from recommender.errors import TagwardenError
from recommender.store import tables as t

from .. import blocks
from ..context import BotContext

__all__ = ["COMMAND", "USAGE", "register", "status_text"]

COMMAND = "/tagwarden"
USAGE = ("Usage: `/tagwarden status`, `/tagwarden suggest <repository glob>`, "
         "`/tagwarden why <repository>@<digest>`")
_MAX_LINES = 15

log = logging.getLogger(__name__)


def status_text(ctx: BotContext) -> str:
    with ctx.store.connect() as conn:
        states = Counter({r.state: r.n for r in conn.execute(
            select(t.batches.c.state, func.count().label("n")).group_by(t.batches.c.state))})
        items = Counter({r.state: r.n for r in conn.execute(
            select(t.batch_items.c.state, func.count().label("n"))
            .group_by(t.batch_items.c.state))})
        pending_bytes = conn.execute(
            select(func.coalesce(func.sum(t.batch_items.c.reclaimable_bytes), 0))
            .where(t.batch_items.c.state == ItemState.SUGGESTED)).scalar_one()
        freed = conn.execute(
            select(func.coalesce(func.sum(t.batch_items.c.deleted_bytes), 0))).scalar_one()
    return (f"*tagwarden status*\n"
            f"• {states[BatchState.PENDING]} batches waiting for approval "
            f"({items[ItemState.SUGGESTED]} manifests, "
            f"{blocks.human_bytes(int(pending_bytes))})\n"
            f"• {states[BatchState.APPROVED]} approved batches in cooling-off or running\n"
            f"• {items[ItemState.DELETED]} manifests deleted "
            f"({blocks.human_bytes(int(freed))}), "
            f"{items[ItemState.SKIPPED]} skipped at the last check, "
            f"{items[ItemState.FAILED]} failed")


def _suggest_text(ctx: BotContext, glob: str) -> str:
    # Imported here: the model stack (scikit-learn, pandas) is only needed when asked.
    from recommender.recommend import suggest

    found = suggest(ctx.store, ctx.config, now=ctx.clock(), repository_glob=glob)
    if not found:
        return f"Nothing to suggest for `{glob}` right now."
    lines = [f"*{len(found)} suggestions for `{glob}`* (top {min(len(found), _MAX_LINES)}):"]
    for s in found[:_MAX_LINES]:
        tags = ", ".join(s.tags) or "untagged"
        lines.append(f"• `{s.repository}` {tags} `{s.digest[7:19]}` "
                     f"{blocks.human_bytes(int(s.reclaimable_bytes or 0))} — "
                     f"{'; '.join(s.reasons)}")
    return "\n".join(lines)


def _why_text(ctx: BotContext, ref: str) -> str:
    from recommender.recommend import explain

    repository, _, digest = ref.partition("@")
    if not repository or not digest.startswith("sha256:"):
        return f"Expected `<repository>@sha256:<hex>`, got `{ref}`."
    found = explain(ctx.store, ctx.config, repository=repository, digest=digest,
                    now=ctx.clock())
    verdict = "suggested for deletion" if found.get("suggested") else "kept"
    lines = [f"*{repository}@{digest[:19]}* is {verdict}"
             + (f" (score {found['score']:.2f})." if "score" in found else ".")]
    if found.get("decided_with_unit"):
        lines.append("It is decided together with the image index or image it belongs to.")
    if found.get("reasons"):
        lines.append("Reasons: " + "; ".join(found["reasons"]))
    if found.get("blocked_by"):
        lines.append("Kept by: " + "; ".join(found["blocked_by"]))
    return "\n".join(lines)


def register(app: App, ctx: BotContext) -> None:
    def command_ack(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        words = (command.get("text") or "").split()
        if words[:1] == ["status"]:
            ack(response_type="ephemeral", text=status_text(ctx))
        elif words[:1] in (["suggest"], ["why"]) and len(words) == 2:
            ack(response_type="ephemeral", text=f"Working on `{' '.join(words)}`…")
            ctx.later(command_answer, command, respond)
        else:
            ack(response_type="ephemeral", text=USAGE)

    def command_answer(command: dict[str, Any], respond: Respond) -> None:
        words = (command.get("text") or "").split()
        if len(words) != 2 or words[0] not in {"suggest", "why"}:
            return
        try:
            text = _suggest_text(ctx, words[1]) if words[0] == "suggest" else _why_text(
                ctx, words[1])
        except TagwardenError as exc:  # no model yet, bad glob: one readable line
            text = f"Could not answer: {exc.message}"
        except Exception:  # a bug must not leave the user waiting; the log has the rest
            log.exception("/tagwarden %s failed", " ".join(words))
            text = "Could not answer: tagwarden failed (the server log has the details)."
        respond(response_type="ephemeral", replace_original=False, text=text[:3000])

    app.command(COMMAND)(command_ack)
