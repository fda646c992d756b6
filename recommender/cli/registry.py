"""``tagwarden scan`` and ``tagwarden inventory``: walk the registry, show what the store knows."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
import typer

from .. import inventory
from .. import registry as registries
from ..timeutil import in_era, utcnow
from .state import app, state

__all__ = ["inventory_command", "scan_command"]

Glob = Annotated[str | None, typer.Option("--repository", "-r", metavar="GLOB",
                                          help="Only repositories matching this glob.")]


class Format(StrEnum):
    table = "table"
    json = "json"


@contextmanager
def _progress() -> Iterator[Callable[[str, int], None]]:
    """A Rich progress bar over repositories, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield lambda _event, _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("scanning", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("scan", total=None)

        def update(event: str, n: int) -> None:
            if event == "repositories":
                bar.update(task, total=n)
            else:
                bar.advance(task, n)

        yield update


@app.command("scan")
def scan_command(
    ctx: typer.Context,
    registry: Annotated[str | None, typer.Option(
        "--registry", metavar="URL", help="Registry base URL (default: registry.url).")] = None,
    repository: Glob = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Requests in flight (default: registry.concurrency).")] = None,
    configs: Annotated[bool, typer.Option(
        "--configs/--no-configs",
        help="Read new images' config blobs (created time, labels, platform): one more "
             "request per new image.")] = True,
) -> None:
    """Walk the registry's catalog, tags and manifests into the store's inventory."""
    st = state(ctx)
    config = st.config
    workers = concurrency or config["registry.concurrency"]
    client = registries.open_async(config, url=registry, max_connections=workers)
    store = st.store

    async def run(update: Callable[[str, int], None]) -> inventory.ScanReport:
        try:
            return await inventory.scan_async(store, client, now=utcnow(), concurrency=workers,
                                              repository_glob=repository, progress=update,
                                              read_configs=configs)
        finally:
            await client.aclose()

    import aiohttp  # noqa: F401 - the Distribution scan's transport imports it: before the freeze

    # What this process has imported lives as long as it does: moved out of the garbage
    # collector's reach, each full collection during the scan walks only the scan's own
    # objects; and a young generation of 20,000 objects instead of 700 (a scan allocates
    # tens per request, few of them cyclic) makes full collections rarer still: the scan's GC
    # CPU more than halves (bench/, "Client CPU trimmed").
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    try:
        with _progress() as update:
            report = asyncio.run(run(update))
    finally:  # the scan's caller (a test, say) may go on in this process
        gc.set_threshold(*threshold)
        gc.unfreeze()
    for error in report.errors[:5]:
        where = error.get("repository", "") + (f":{error['tag']}" if "tag" in error else "")
        print(f"{where}: {error['error']}", file=sys.stderr)
    typer.echo(report.summary())
    if report.errors:
        raise typer.Exit(1)


def _text(value: Any, now: datetime) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        # A time no registry can have written (a sender's zero or far-future clock).
        return value.strftime("%Y-%m-%d %H:%M") if in_era(value, now=now) else "unknown"
    return str(value)


_NUMBERS = frozenset({"uses", "non_use_pulls", "bytes"})
_COLUMNS = ("repository", "digest", "tags", "pushed_at", "last_used_at", "uses",
            "non_use_pulls", "running", "referenced", "bytes")


@app.command("inventory")
def inventory_command(
    ctx: typer.Context,
    repository: Glob = None,
    output: Annotated[Format, typer.Option("--format", help="table or json.")] = Format.table,
) -> None:
    """List each manifest the store knows: tags, push and last use, uses, running,
    declared references, bytes."""
    st = state(ctx)
    now = utcnow()
    with st.store.connect() as conn:
        rows = inventory.list_inventory(conn, now=now, repository_glob=repository)
    if output is Format.json:
        sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in _COLUMNS:
        table.add_column(column, no_wrap=True, overflow="ellipsis",
                         justify="right" if column in _NUMBERS else "left")
    for row in rows:
        cells = [_text(row[c], now) for c in _COLUMNS]
        cells[1] = cells[1].removeprefix("sha256:")[:12]  # as `docker images` shows them
        table.add_row(*cells)
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
    typer.echo(f"{len(rows)} manifests")
