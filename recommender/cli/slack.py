"""Slack commands: ``tagwarden digest [--team] [--post] [--now]``, ``tagwarden slack manifest``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from ..errors import ConfigError
from ..timeutil import parse_time, utcnow
from .state import app, state

slack_app = typer.Typer(help="The Slack app: its manifest.", no_args_is_help=True)
app.add_typer(slack_app, name="slack")

@slack_app.command("manifest")
def manifest(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(
        help="Public base URL of `tagwarden serve` (default slack.public_url).")] = None,
) -> None:
    """Print the Slack app manifest (YAML) with this deployment's request URLs."""
    st = state(ctx)
    base = url or st.config["slack.public_url"]
    if not base.startswith(("https://", "http://")):
        raise ConfigError(f"public URL must start with https://, got {base!r}",
                          setting="slack.public_url")
    typer.echo(st.notifier.app_manifest(base), nl=False)


@app.command()
def digest(
    ctx: typer.Context,
    team: Annotated[str | None, typer.Option(help="Only this team (default: every team "
                                                  "with a channel).")] = None,
    post: Annotated[bool, typer.Option("--post", help="Post it to the teams' channels.")] = False,
    now: Annotated[str | None, typer.Option(
        "--now", help="The instant to report as of (RFC 3339; default the current time).")] = None,
) -> None:
    """Build the weekly digest; print it, or post it with --post."""
    st = state(ctx)
    config = st.config
    when: datetime = parse_time(now) if now else utcnow()
    teams = [t for t in config.teams if t.channel and (team is None or t.name == team)]
    if not teams:
        raise ConfigError(f"no team {team!r} with a channel" if team else
                          "no [[team]] has a channel: nothing to report to",
                          setting="team.channel")
    notifier = st.notifier
    for t in teams:
        report = notifier.digest(st.store, team=t.name, now=when, post=post)
        if post:
            state_text = "posted" if report.ts else "NOT posted (Slack refused; see the log)"
            typer.echo(f"{t.name}: digest {state_text} to {report.channel}, "
                       f"{report.pages_posted} page(s) in its thread"
                       + (f", {report.pages_failed} failed" if report.pages_failed else ""))
            if not report.ts:
                raise typer.Exit(1)
        else:
            typer.echo(f"# {t.name} -> {report.channel}")
            for message in report.messages:
                typer.echo(_plain_text(message))


def _plain_text(message: dict[str, Any]) -> str:
    """A terminal rendering of a Block Kit message: its text parts, in order."""
    lines: list[str] = []
    for block in message.get("blocks", []):
        if "text" in block:
            lines.append(block["text"]["text"])
        for f in block.get("fields", []):
            lines.append(f["text"].replace("\n", ": "))
        for e in block.get("elements", []) if block.get("type") == "context" else []:
            lines.append(e["text"])
    return "\n".join(lines) + "\n"
