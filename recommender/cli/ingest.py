"""``tagwarden ingest``: load telemetry from files (JSON lines; ``-`` is stdin; ``.gz`` accepted).

Each line is parsed on its own: a bad line is counted as rejected, with its number, and the
file goes on. Events are read in batches of up to 10,000, so memory stays constant, and committed
in groups of up to 50,000 events (:mod:`recommender.collector.groupcommit`): a crash loses at
most the open transaction, which a re-run stores without duplicates. Files are parsed in a
second process while this one writes (:mod:`recommender.collector.pipeline`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import Annotated, Any

import typer

from ..collector import cloudtrail, deploy, distribution, harbor, k8s
from ..collector.events import WriteResult
from ..collector.files import JsonLines, decode_line
from ..collector.payload import check_time
from ..collector.pipeline import BATCH, Parse, Position, decoded, ingest_files, open_all
from ..collector.writer import EventWriter
from ..errors import PayloadError
from ..timeutil import FUTURE_SKEW, parse_time, utcnow
from ..usage import Classifier
from .state import app, state

__all__ = ["ingest_app"]

ingest_app = typer.Typer(
    name="ingest", help="Load registry, deploy and Kubernetes telemetry from files.",
    no_args_is_help=True,
)
app.add_typer(ingest_app, name="ingest")

Files = Annotated[list[str], typer.Argument(help="JSON lines files; - for stdin; .gz accepted.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1,
                                        help="Events per batch handed to the writer.")]
Now = Annotated[str | None, typer.Option(
    "--now", help="Refuse (as bad lines) events later than this instant (RFC 3339); "
                  "default: a day past the current time.")]
_SHOW_LINES = 10
_SHOW_REASONS = 5


class _Tally:
    """Counts and rejected lines across the files of one command."""

    def __init__(self, files: list[str]) -> None:
        self.many = len(files) > 1
        self.result = WriteResult()
        self.rejected: list[str] = []
        self.reasons: list[str] = []

    def reject(self, path: str, line: int, exc: PayloadError) -> None:
        label = f"{path}:{line}" if self.many else str(line)
        self.rejected.append(label)
        if len(self.reasons) < _SHOW_REASONS:
            message = exc.message if exc.message.startswith("line ") else f"line {line}: " \
                f"{exc.message}"
            self.reasons.append(f"{path}: {message}" if self.many else message)

    def rejected_text(self) -> str:
        if not self.rejected:
            return "rejected 0"
        shown = ", ".join(self.rejected[:_SHOW_LINES])
        more = ", …" if len(self.rejected) > _SHOW_LINES else ""
        return f"rejected {len(self.rejected)} (lines {shown}{more})"

    def finish(self, summary: str) -> None:
        for reason in self.reasons:
            print(reason, file=sys.stderr)
        print(summary)
        if self.rejected:
            raise typer.Exit(1)


@contextmanager
def _progress(label: str, files: list[str]) -> Iterator[Callable[[Position | None], None]]:
    """A Rich progress bar over the bytes of each file, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield lambda _position: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        tasks: dict[int, Any] = {}

        def update(position: Position | None) -> None:
            if position is None:
                return
            index, done, total = position
            if index not in tasks:
                tasks[index] = bar.add_task(f"{label} {files[index]}", total=total)
            bar.update(tasks[index], completed=done)

        yield update


def _ingest_events(ctx: typer.Context, files: list[str], batch_size: int, label: str,
                   parse: Parse) -> None:
    st = state(ctx)
    classifier = Classifier.from_config(st.config)
    open_all(files)
    tally = _Tally(files)

    def committed(result: WriteResult) -> None:
        tally.result += result

    def rejected(index: int, number: int, reason: str) -> None:
        tally.reject(files[index], number, PayloadError(reason))

    ingest_files(files, batch_size, parse, classifier, st.store, st.config,
                 committed=committed, rejected=rejected,
                 progress=lambda: _progress(label, files), clock=utcnow)
    r = tally.result
    tally.finish(f"read {r.received}, stored {r.stored}, duplicates {r.duplicates}, "
                 f"{tally.rejected_text()}")


def _latest(now: str | None) -> datetime:
    """The latest event time a file may hold: ``--now``, or the clock plus a sender's skew."""
    if now is None:
        return utcnow() + FUTURE_SKEW
    try:
        return parse_time(now)
    except (ValueError, OverflowError) as exc:
        raise PayloadError(f"--now: {exc}", where="now") from None


@ingest_app.command("distribution")
def ingest_distribution(ctx: typer.Context, files: Files, batch_size: BatchSize = BATCH,
                        now: Now = None) -> None:
    """Distribution notification envelopes, one per line."""
    _ingest_events(ctx, files, batch_size, "distribution",
                   partial(distribution.parse_envelope_line, latest=_latest(now)))


@ingest_app.command("harbor")
def ingest_harbor(ctx: typer.Context, files: Files, batch_size: BatchSize = BATCH,
                  now: Now = None) -> None:
    """Harbor webhook payloads (Default or CloudEvents), one per line."""
    _ingest_events(ctx, files, batch_size, "harbor",
                   decoded(partial(harbor.parse_webhook, latest=_latest(now))))


@ingest_app.command("cloudtrail")
def ingest_cloudtrail(ctx: typer.Context, files: Files, batch_size: BatchSize = BATCH,
                      now: Now = None) -> None:
    """Amazon ECR's CloudTrail records: a trail's log files ({"Records": [...]} on one line,
    other services' records skipped), or JSON lines of records or EventBridge events."""
    _ingest_events(ctx, files, batch_size, "cloudtrail",
                   decoded(partial(cloudtrail.parse_cloudtrail, latest=_latest(now))))


@ingest_app.command("deploys")
def ingest_deploys(ctx: typer.Context, files: Files, batch_size: BatchSize = BATCH,
                   now: Now = None) -> None:
    """Deploy events, one object (or array) per line."""
    latest = _latest(now)
    _ingest_events(ctx, files, batch_size, "deploys",
                   decoded(lambda obj, _classifier: deploy.parse_deploys(obj, latest=latest)))


@ingest_app.command("k8s")
def ingest_k8s(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(
        help="`kubectl get pods -A -o json` output, or JSON lines of "
             '{"source", "taken_at", "list"}; - for stdin.')],
    at: Annotated[str | None, typer.Option(
        "--at", help="When the pod list was taken (RFC 3339; default now).")] = None,
    source: Annotated[str, typer.Option(
        "--source", help="Cluster name (lines that name their own source keep it).")
    ] = "default",
    now: Now = None,
) -> None:
    """What runs in Kubernetes: one pod list, or JSON lines of snapshots."""
    st = state(ctx)
    latest = _latest(now)
    taken_at: datetime | None = None
    if at is not None:
        try:
            taken_at = check_time(parse_time(at), "--at", latest)
        except (ValueError, OverflowError) as exc:
            raise PayloadError(f"--at: {exc}", where="at") from None
    writer = EventWriter.from_config(st.store, st.config)
    tally = _Tally([file])
    snapshots = pods = refs = 0
    first = True
    with JsonLines(file) as lines:
        for number, obj in lines:
            if first and not (isinstance(obj, dict) and "list" in obj):
                # One (pretty-printed) document, not snapshot lines: the first line read is
                # only its beginning.
                doc = decode_line(lines.last_raw + lines.rest(), 1)
                if isinstance(doc, PayloadError):
                    raise PayloadError(f"{file}: not a pod list nor snapshot lines "
                                       f"({doc.message})", file=file)
                snap = k8s.parse_pod_list(doc, source=source, taken_at=taken_at or utcnow())
                n = writer.write_snapshot(snap)
                print(f"read 1 snapshot of {snap.pods} pods from {source}: "
                      f"stored {n} running references")
                return
            first = False
            try:
                if isinstance(obj, PayloadError):
                    raise obj
                if not isinstance(obj, dict):
                    raise PayloadError("line must be an object", where="")
                src = obj.get("source") or source
                if not isinstance(src, str):
                    raise PayloadError("source must be a string", where="source")
                when = obj.get("taken_at")
                line_at = (taken_at or utcnow()) if when is None else _line_time(when, latest)
                snap = k8s.parse_pod_list(obj.get("list"), source=src, taken_at=line_at)
            except PayloadError as exc:
                tally.reject(file, number, exc)
                continue
            refs += writer.write_snapshot(snap)
            snapshots += 1
            pods += snap.pods
    tally.finish(f"read {snapshots + len(tally.rejected)} snapshots, stored {snapshots} "
                 f"({pods} pods, {refs} running references), {tally.rejected_text()}")


def _line_time(value: Any, latest: datetime) -> datetime:
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"not a time: {value!r}")
        return check_time(parse_time(value), "taken_at", latest)
    except (ValueError, OverflowError, OSError) as exc:
        raise PayloadError(f"taken_at: {exc}", where="taken_at") from None

