"""Model commands: ``train``, ``backtest``, ``suggest``, ``why``."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from ..errors import ConfigError, PayloadError
from ..sizes import human_bytes, total_text
from ..timeutil import parse_duration, parse_time, utcnow
from .state import app, state

Now = Annotated[str | None, typer.Option(
    "--now", help="The instant to act as of (RFC 3339; default the current time).")]
Horizon = Annotated[str | None, typer.Option(
    "--horizon", help="Prediction horizon (default model.horizon, 90d).")]


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _time(value: str | None, option: str) -> datetime:
    if value is None:
        return utcnow()
    try:
        return parse_time(value)
    except (ValueError, OverflowError) as exc:
        raise PayloadError(f"{option}: {exc}", where=option) from None


def _horizon(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        days = parse_duration(value).total_seconds() / 86400
    except ValueError as exc:
        raise PayloadError(f"--horizon: {exc}", where="horizon") from None
    if days <= 0:
        raise PayloadError("--horizon must be positive", where="horizon")
    return days


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _count(m: Any, key: str) -> int:
    """A Metrics or its dict form (backtest rows): dead_sized / dead_unsized."""
    return int((m.get(key) if isinstance(m, dict) else getattr(m, key, 0)) or 0)


def _known(m: Any) -> bool:
    return bool(_count(m, "dead_sized") or not _count(m, "dead_unsized"))


def _bytes_recall(m: Any) -> str:
    """Bytes recall over the manifests of known size; '–' when no unused one has a size."""
    value = m["bytes_recall"] if isinstance(m, dict) else m.bytes_recall
    return _pct(value) if _known(m) else "–"


def _size_note(rows: list[Any]) -> str | None:
    """Says over what bytes recall was counted when the store lacks some sizes."""
    sized = max((_count(r, "dead_sized") for r in rows), default=0)
    unsized = max((_count(r, "dead_unsized") for r in rows), default=0)
    if not unsized:
        return None
    if not sized:
        return (f"bytes recall: unknown, no size known for the {unsized} unused manifests "
                f"(run `tagwarden scan`)")
    return (f"bytes recall counts only the {sized} unused manifests of known size "
            f"({unsized} of unknown size left out)")


@app.command()
def train(ctx: typer.Context, now: Now = None, horizon: Horizon = None) -> None:
    """Train a model on the store's history; promote it when not worse than the current one."""
    from ..model import train as run_train  # scikit-learn/pandas: only when a command needs them

    st = state(ctx)
    report = run_train(st.store, st.config, now=_time(now, "--now"), horizon_days=_horizon(horizon))
    typer.echo(report.message)
    if report.mode != "model":
        return
    typer.echo(f"model {report.model_id}: {report.snapshots} snapshots, "
               f"threshold P(dead) >= {report.threshold:.4f}")
    typer.echo(f"{'validation':<22}{'precision':>11}{'recall':>9}{'bytes recall':>14}"
               f"{'suggested':>11}{'false pos.':>11}")
    for name, m in (("new", report.new), (f"current {report.current_id or ''}", report.current)):
        if m is None:
            continue
        typer.echo(f"{name[:22]:<22}{_pct(m.precision):>11}{_pct(m.recall):>9}"
                   f"{_bytes_recall(m):>14}{m.suggested:>11}{m.false_positives:>11}")
    note = _size_note([m for m in (report.new, report.current) if m is not None])
    if note:
        typer.echo(note)
    typer.echo("promoted" if report.promoted else "not promoted (kept as a candidate)")


@app.command()
def backtest(
    ctx: typer.Context,
    at: Annotated[str, typer.Option("--at", help="Train as of this instant; evaluate after it.")],
    horizon: Horizon = None,
    fmt: Annotated[Format, typer.Option("--format", help="table or json.")] = Format.table,
) -> None:
    """Train on what was known at --at, evaluate on the following horizon, beside the rules."""
    from ..model import backtest as run_backtest

    st = state(ctx)
    report = run_backtest(st.store, st.config, at=_time(at, "--at"), now=utcnow(),
                          horizon_days=_horizon(horizon))
    if fmt is Format.json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    if fmt is Format.csv:
        raise ConfigError("backtest prints table or json", setting="format")
    typer.echo(f"backtest at {report.at:%Y-%m-%d}, horizon {report.horizon_days:.0f} days "
               f"({report.mode})")
    if report.message:
        typer.echo(report.message)
    width = max([10, *(len(row["name"]) for row in report.rows)])
    typer.echo(f"{'':<{width}}{'precision':>10}{'recall':>9}{'bytes recall':>13}{'suggested':>10}"
               f"{'false pos.':>11}{'bytes':>12}  rule")
    for row in report.rows:
        size = human_bytes(row["suggested_bytes"]) if _known(row) else "–"
        typer.echo(f"{row['name']:<{width}}{_pct(row['precision']):>10}{_pct(row['recall']):>9}"
                   f"{_bytes_recall(row):>13}{row['suggested']:>10}"
                   f"{row['false_positives']:>11}{size:>12}  "
                   f"{row['rule']}")
    note = _size_note(report.rows)
    if note:
        typer.echo(note)
    for line in _backtest_notes(report):
        typer.echo(line)


def _backtest_notes(report: Any) -> list[str]:
    """The model beside the idle rule on the same eligible set: ratio, threshold, weekly runs."""
    from ..features import to_datetime

    lines = []
    ratio = report.ratio()
    if ratio is not None:
        lines.append(f"inside the guardrails the model reclaims {ratio:.2f}x the unused bytes "
                     f"of the idle rule tuned on the past to the same precision, on whole "
                     f"snapshots and in weekly runs ({report.row('idle rule')['rule']})")
    eff = report.efficiency
    if eff is not None and eff.value is not None:
        lines.append(f"threshold efficiency {eff.value:.3f}: {human_bytes(eff.operating_bytes)} "
                     f"of the {human_bytes(eff.best_bytes)} unused the same scores reach at "
                     f"{_pct(eff.target)} precision with the threshold chosen knowing the "
                     f"future (P(dead) >= {eff.best_threshold:.4f})")
    elif eff is not None:
        lines.append(f"threshold efficiency: none ({eff.reason})")
    for name, weekly in report.weekly.items():
        worst = weekly.worst
        later = weekly.later
        lines.append(
            f"weekly runs, {name}: {_pct(weekly.precision)} precision on the {len(later)} runs "
            f"after the first ({sum(r.false_positives for r in later)} used again of "
            f"{sum(r.suggested for r in later)} suggested)"
            + (f", worst week {_pct(worst.precision)} ({to_datetime(worst.at):%Y-%m-%d})"
               if worst else ""))
    if report.weekly:
        lines.append("(a weekly suggestion counts as used again when used before the end of "
                     "the horizon after --at)")
    return lines


@app.command("suggest")
def suggest_cmd(
    ctx: typer.Context,
    now: Now = None,
    include_all: Annotated[bool, typer.Option("--all", help="Every alive manifest.")] = False,
    repository: Annotated[str | None, typer.Option(
        "--repository", help="Only repositories matching this glob.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, json or csv.")] = Format.table,
    post: Annotated[bool, typer.Option("--post", help="Post the batches to Slack.")] = False,
    wait: Annotated[str, typer.Option(
        "--wait", help="With --post: how long to wait while the suggest job runs elsewhere "
        "(a replica's schedule, another --post); 0 refuses at once.")] = "2m",
) -> None:
    """Scored, guardrailed deletion suggestions ranked by expected reclaimable bytes.

    With --post this is a run of the scheduled suggest job, claimed like it: it waits for (up
    to --wait) or refuses beside a run already going, so a batch is never posted twice."""
    st = state(ctx)
    when = _time(now, "--now")
    if not post:
        _suggest(st, when, include_all, repository, fmt)
        return
    from ..jobruns import JobRuns
    from ..store.db import application_name

    try:
        patience = parse_duration(wait)
    except ValueError as exc:
        raise PayloadError(f"--wait: {exc}", where="wait") from None
    runs = JobRuns(st.store, ttl=st.config["scheduler.claim_ttl"])

    def waiting(held: Any) -> None:
        typer.echo(f"waiting up to {wait} for the suggest run on {held.owner} "
                   f"(since {held.claimed_at.isoformat()})", err=True)

    claim = runs.claim_waiting("suggest", owner=f"cli-{application_name()}", wait=patience,
                               on_wait=waiting)
    with runs.running(claim):
        items = _suggest(st, when, include_all, repository, fmt)
        _post(st, items, when)


def _suggest(st: Any, when: datetime, include_all: bool, repository: str | None,
             fmt: Format) -> list[Any]:
    from ..recommend import suggest

    items = suggest(st.store, st.config, now=when, repository_glob=repository,
                    include_all=include_all)
    if fmt is Format.json:
        typer.echo(json.dumps([s.as_dict() for s in items], indent=2))
    elif fmt is Format.csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["repository", "digest", "tags", "score", "suggested",
                         "reclaimable_bytes", "batch", "blocked_by", "reasons"])
        for s in items:
            writer.writerow([s.repository, s.digest, " ".join(s.tags), f"{s.score:.6f}",
                             s.suggested, "" if s.reclaimable_bytes is None else
                             s.reclaimable_bytes, s.batch, "; ".join(s.blocked_by),
                             "; ".join(s.reasons)])
        typer.echo(buf.getvalue(), nl=False)
    else:
        if not items:
            from ..recommend import mode_note

            note = mode_note(st.store, st.config, now=when)
            if note:
                typer.echo(note)
        _table(items)
    return items


def _table(items: list[Any]) -> None:
    if not items:
        typer.echo("nothing to suggest")
        return
    if items[0].mode != "model":
        typer.echo(items[0].reasons[0])
    suggested = [s for s in items if s.suggested]
    typer.echo(f"{len(suggested)} suggested of {len(items)} listed; "
               f"{total_text([s.size for s in suggested])} reclaimable")
    for s in items:
        mark = "DELETE?" if s.suggested else "keep"
        tags = ",".join(s.tags) or "(untagged)"
        typer.echo(f"{mark:<8}{s.score:7.4f}  {s.repository}@{s.digest[:19]}  {tags[:40]}  "
                   f"{human_bytes(s.size)}")
        why = s.blocked_by if s.blocked_by else s.reasons[1:]
        typer.echo(f"{'':<10}{'kept: ' if s.blocked_by else ''}{'; '.join(why)}")


def _post(st: Any, items: list[Any], now: datetime) -> None:
    report = st.notifier.post_suggestions(st.store, items, now=now)
    typer.echo(f"posted {len(report.posted)} batches ({len(report.recorded)} new); "
               f"{len(report.failed)} failed; {len(report.skipped)} skipped")
    for batch_id, error in report.failed.items():
        typer.echo(f"  {batch_id}: {error}")


@app.command()
def why(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(help="REPOSITORY@DIGEST")],
    now: Now = None,
) -> None:
    """Every reason a manifest is kept or proposed."""
    repo, sep, digest = reference.partition("@")
    if not sep or not repo or not digest.startswith("sha256:"):
        raise PayloadError(f"expected REPOSITORY@sha256:..., got {reference!r}",
                           where="reference")
    from ..recommend import explain

    st = state(ctx)
    info = explain(st.store, st.config, repository=repo, digest=digest,
                   now=_time(now, "--now"))
    typer.echo(f"{repo}@{digest}")
    if info.get("decided_with_unit"):
        typer.echo("decided together with its index or subject:")
    verdict = "suggested for deletion" if info.get("suggested") else "kept"
    typer.echo(f"verdict: {verdict}" + (f" (score {info['score']:.4f})" if "score" in info
                                         else ""))
    for reason in info["blocked_by"]:
        typer.echo(f"  guardrail: {reason}")
    for reason in info.get("reasons", []):
        typer.echo(f"  signal: {reason}")
