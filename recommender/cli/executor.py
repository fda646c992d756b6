"""Executor commands: ``execute``, ``audit verify|export``, ``restore``, ``batches``."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from sqlalchemy import select

from .. import registry
from ..audit import AuditLog
from ..backup import Restored, copy_manifest
from ..backup import restore as restore_layouts
from ..config import Config
from ..decisions import ItemState, list_batches
from ..errors import TagwardenError
from ..executor import CallLog, Executor
from ..reference import is_digest
from ..registry import WritableRegistry
from ..store import Store
from ..store.tables import batch_items
from ..timeutil import parse_time, utcnow
from .state import app, state

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _now(value: str | None) -> datetime:
    if value is None:
        return utcnow()
    try:
        return parse_time(value)
    except ValueError as exc:
        raise TagwardenError(f"--now: {exc}", option="--now") from None


@app.command()
def execute(
    ctx: typer.Context,
    now: Annotated[str | None, typer.Option(
        "--now", help="Act as if it were this time (RFC 3339); default: the clock.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Re-check and report everything, delete nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Delete what is approved and past its cooling-off, after a last re-check."""
    st = state(ctx)
    when = _now(now)
    calls = CallLog()
    client = registry.open(st.config, recorder=calls)
    try:
        report = Executor(st.store, client, st.config, dry_run=dry_run,
                          calls=calls).run_due(when)
    finally:
        client.close()
    # Redraw the Slack messages of finished batches, as the scheduler's execute job does: a
    # run by hand must not leave a message saying "deletion due" over a deleted image.
    drawn = st.notifier.publish_results(st.store, now=when) if not dry_run else []
    if as_json:
        typer.echo(orjson.dumps(report.as_dict() | {"slack_updated": drawn},
                                option=orjson.OPT_INDENT_2).decode())
        return
    for o in report.outcomes:
        tags = ",".join(o.tags) or "untagged"
        typer.echo(f"{o.outcome:12} {o.repository}@{o.digest} ({tags}) {o.reason}")
    counts = ", ".join(f"{report.count(k)} {k}" for k in sorted({o.outcome
                                                                 for o in report.outcomes}))
    typer.echo(f"{'dry run: ' if dry_run else ''}{counts or 'nothing due'}")
    if report.deleted:
        step = f"; run: {report.gc_command}" if report.gc_command else ""
        typer.echo(f"{report.reclaimable_bytes} bytes reclaimable: {report.reclaim_note}{step}")
    if drawn:
        typer.echo(f"{len(drawn)} Slack message(s) updated with the results")


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Recompute the hash chain; exit 1 naming the first row that does not fit."""
    result = AuditLog(state(ctx).store).verify()
    if not result.ok:
        raise TagwardenError(f"audit log broken at row {result.bad_seq}: {result.problem}",
                             seq=result.bad_seq)
    typer.echo(f"audit log intact: {result.rows} rows, head {result.head}")


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="Output format (jsonl).")] = "jsonl",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="File to write (default: standard output).",
        dir_okay=False)] = None,
) -> None:
    """Write every audit row, in chain order, one JSON object per line."""
    log = AuditLog(state(ctx).store)
    if output is None:
        log.export(sys.stdout, fmt=fmt)
        return
    with output.open("w", encoding="utf-8") as out:
        count = log.export(out, fmt=fmt)
    typer.echo(f"{count} rows written to {output}", err=True)


@app.command()
def restore(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(
        help="A backup layout or a directory of them; with --from-registry, REPO@DIGEST.")],
    repository: Annotated[str | None, typer.Option(
        "--repository", help="Push into this repository instead of the recorded one.")] = None,
    from_registry: Annotated[str | None, typer.Option(
        "--from-registry", help="Copy back from this backup registry (base URL).")] = None,
    tags: Annotated[list[str] | None, typer.Option(
        "--tag", help="Tags to restore (default: the tags it had when it was deleted).")] = None,
) -> None:
    """Put back what was backed up before a deletion (blobs, children, manifest, tags)."""
    st = state(ctx)
    calls = CallLog()
    client = registry.open_writable(st.config, recorder=calls)
    try:
        if from_registry:
            done = [_restore_from_registry(st.store, st.config, client, calls, from_registry,
                                           source, repository, tags)]
        else:
            done = restore_layouts(client, Path(source), repository=repository)
    finally:
        client.close()
    for r in done:
        typer.echo(f"restored {r.repository}@{r.digest} ({','.join(r.tags) or 'untagged'})")
    AuditLog(st.store).append("restore", "cli", {
        "source": from_registry or source,
        "restored": [[r.repository, r.digest, list(r.tags)] for r in done],
        "calls": calls.drain(),
    }, now=utcnow())


def _restore_from_registry(store: Store, config: Config, client: WritableRegistry,
                           calls: CallLog, url: str, source: str, repository: str | None,
                           tags: list[str] | None) -> Restored:
    if repository is not None:
        raise TagwardenError("--repository is not supported with --from-registry",
                             option="--repository")
    repo, sep, digest = source.partition("@")
    if not sep or not is_digest(digest):
        raise TagwardenError(f"expected REPO@DIGEST, got {source!r}", source=source)
    if tags is None:
        with store.connect() as conn:
            recorded = conn.execute(
                select(batch_items.c.tags).where(batch_items.c.repository == repo)
                .where(batch_items.c.digest == digest)
                .where(batch_items.c.state == ItemState.DELETED)
                .order_by(batch_items.c.finished_at.desc())).scalars().first()
        tags = list(recorded or [])
    backup = registry.open_writable(
        config, url=url, credentials=(config["executor.backup_registry_username"],
                                      config["executor.backup_registry_password"]),
        recorder=calls)
    try:
        # The backup registry holds it under the original repository name.
        copy_manifest(backup, client, repo, digest, tags)
    finally:
        backup.close()
    return Restored(repo, digest, tuple(tags), Path(url))


@app.command()
def batches(
    ctx: typer.Context,
    state_filter: Annotated[str | None, typer.Option(
        "--state", help="Only batches in this state (pending, approved, done...).")] = None,
) -> None:
    """List recorded batches and their items' states."""
    found = list_batches(state(ctx).store, states=[state_filter] if state_filter else None)
    for b in found:
        items = ", ".join(f"{n} {s}" for s, n in sorted(
            {i.state: b.count(i.state) for i in b.items}.items()))
        due = f" due {b.due_at.isoformat()}" if b.due_at else ""
        typer.echo(f"{b.id} {b.state:9} {b.team} {b.repository} ({b.kind}): {items}{due}")
    if not found:
        typer.echo("no batches")
