"""``tagwarden ingest refs`` and ``tagwarden ingest docker-ps``: declared references.

Both replace the source's previous set in one transaction and print what they found, what
they could not resolve and what they skipped, so nobody believes a template was checked.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from ..collector.payload import check_time
from ..errors import PayloadError
from ..reference import managed_repository, registry_hosts
from ..refs import Findings, current_references, parse_docker_ps, record, walk
from ..refs.found import NOTE_KINDS
from ..refs.store import ReplaceResult
from ..timeutil import FUTURE_SKEW, parse_time, utcnow
from .ingest import ingest_app
from .state import app, state

__all__ = ["ingest_docker_ps", "ingest_refs", "refs_app", "refs_list"]

refs_app = typer.Typer(name="refs", help="Declared references (what files and hosts name).",
                       no_args_is_help=True)
app.add_typer(refs_app, name="refs")

Source = Annotated[str | None, typer.Option(
    "--source", help="Name of this set of references; the next ingest of the same source "
                     "replaces it (default: derived from the path).")]
At = Annotated[str | None, typer.Option(
    "--at", help="When these references were true (RFC 3339; default now).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Read and report; store nothing.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q",
                                     help="Only the notes and the summary, not every reference.")]
AllowEmpty = Annotated[bool, typer.Option(
    "--allow-empty", help="Let a read that finds nothing clear the source's references.")]


def _when(at: str | None) -> datetime:
    if at is None:
        return utcnow()
    try:
        return check_time(parse_time(at), "--at", utcnow() + FUTURE_SKEW)
    except (ValueError, OverflowError) as exc:
        raise PayloadError(f"--at: {exc}", where="at") from None


def _build_args(values: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for value in values:
        name, sep, arg = value.partition("=")
        if not sep or not name:
            raise PayloadError(f"--build-arg {value!r}: expected NAME=VALUE", where="build-arg")
        args[name] = arg
    return args


def _report(found: Findings, source: str, result: ReplaceResult | None, hosts: frozenset[str],
            quiet: bool) -> None:
    if not quiet:
        for ref in found.refs:
            detail = f"  [{ref.detail}]" if ref.detail else ""
            typer.echo(f"{ref.location}  {ref.image}{detail}")
    for kind in NOTE_KINDS:
        notes = found.notes_of(kind)
        if notes:
            typer.echo(f"{kind} ({len(notes)}):", err=True)
            for note in notes:
                typer.echo(f"  {note}", err=True)
    files = ", ".join(f"{kind} {n}" for kind, n in sorted(found.files.items()))
    images = Counter(str(r.ref) for r in found.refs)
    if hosts:
        ours = sum(1 for r in found.refs if managed_repository(r.ref, hosts) is not None)
        managed = f"{ours} in the managed registry"
    else:
        managed = "no registry.url set: all count as ours"
    summary = (f"{source}: {len(found.refs)} references ({len(images)} images, {managed}), "
               f"{len(found.notes_of('unresolved'))} unresolved, "
               f"{len(found.notes_of('skipped'))} skipped, {len(found.notes_of('invalid'))} "
               f"invalid; files: {files or 'none'}")
    if result is None:
        summary += "; dry run, nothing stored"
    else:
        summary += (f"; stored: {result.added} added, {result.removed} removed, "
                    f"{result.unchanged} unchanged")
    typer.echo(summary)


def _store(ctx: typer.Context, source: str, found: Findings, at: datetime, dry_run: bool,
           quiet: bool, allow_empty: bool = False) -> None:
    st = state(ctx)
    hosts = registry_hosts(st.config["registry.url"], st.config["registry.hosts"])
    result = None
    if not dry_run:
        if not found.refs and not allow_empty:
            # A mistyped path must not silently drop every protection the source gave.
            with st.store.connect() as conn:
                held = len(current_references(conn, at=at, source=source))
            if held:
                raise PayloadError(
                    f"no references found, but {source!r} declares {held}: pass --allow-empty "
                    "to clear them", where="source", source=source)
        result = record(st.store, {source: found.refs}, at=at, hosts=hosts)[0]
    _report(found, source, result, hosts, quiet)


@ingest_app.command("refs")
def ingest_refs(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(
        help="Checkouts, directories or files (Dockerfiles, Kubernetes, Compose, Argo CD).")],
    source: Source = None,
    at: At = None,
    build_arg: Annotated[list[str] | None, typer.Option(
        "--build-arg", help="NAME=VALUE for Dockerfile ARGs, as `docker build` takes it.")
    ] = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    allow_empty: AllowEmpty = False,
) -> None:
    """Image references declared in files: they are kept even when nothing runs them."""
    when = _when(at)
    if source is None:
        if len(paths) != 1:
            raise PayloadError("several paths need --source NAME (the set they replace)",
                               where="source")
        source = f"files:{paths[0].resolve().as_posix()}"
    found = walk(paths, build_args=_build_args(build_arg or []))
    _store(ctx, source, found, when, dry_run, quiet, allow_empty)


@ingest_app.command("docker-ps")
def ingest_docker_ps(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(
        help="Output of docker ps -a --format '{{json .}}'; - for stdin.")],
    source: Source = None,
    at: At = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    allow_empty: AllowEmpty = False,
) -> None:
    """Containers on a Docker host (running or stopped): their images are kept."""
    when = _when(at)
    if file == "-":
        text, name = sys.stdin.read(), "stdin"
    else:
        try:
            text, name = Path(file).read_text(encoding="utf-8"), Path(file).name
        except (OSError, UnicodeDecodeError) as exc:
            raise PayloadError(f"cannot read {file}: {exc}", where=file) from None
    if source is None:
        if file == "-":
            raise PayloadError("reading stdin needs --source NAME (the host)", where="source")
        source = f"docker-ps:{Path(file).stem}"
    found = parse_docker_ps(text, path=name)
    _store(ctx, source, found, when, dry_run, quiet, allow_empty)


@refs_app.command("list")
def refs_list(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Option("--source", help="Only this source.")] = None,
    at: Annotated[str | None, typer.Option(
        "--at", help="As of this time (RFC 3339; default now).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Every reference declared at a time, with the repository it keeps in our registry."""
    when = _when(at)
    with state(ctx).store.connect() as conn:
        rows = current_references(conn, at=when, source=source)
    if as_json:
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    for row in rows:
        keeps = row["repository"] or "(another registry)"
        typer.echo(f"{row['source']}  {row['location']}  {row['image']}  -> {keeps}")
    typer.echo(f"{len(rows)} references from {len({r['source'] for r in rows})} sources "
               f"at {when.isoformat()}")
