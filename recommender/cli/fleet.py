"""``tagwarden fleet generate|load-inventory``: synthetic registry fleets in the real formats."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ..timeutil import parse_time
from .state import app, state

fleet_app = typer.Typer(help="Generate seeded registry fleets (Distribution events, deploys, "
                             "pod lists, inventory).", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")


@contextmanager
def _progress(total: int) -> Iterator[Callable[[str], None]]:
    """Rich progress on a terminal; silence otherwise (logs, CI)."""
    if not sys.stderr.isatty():
        yield lambda _msg: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task("simulating", total=total)

        def step(msg: str) -> None:
            bar.update(task, advance=1, description=msg[:60])

        yield step


class Reuse(StrEnum):
    """``FleetSpec.reuse`` (recommender/fleet/reuse.py); kept here so ``--help`` lists them
    without importing the generator."""

    low = "low"
    medium = "medium"
    high = "high"


@fleet_app.command("generate")
def generate_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the fleet into.",
                                      file_okay=False)] = Path("data/generated/fleet"),
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 1,
    repositories: Annotated[int, typer.Option(help="Number of repositories.")] = 20,
    days: Annotated[int, typer.Option(help="Days of history.")] = 120,
    start: Annotated[str, typer.Option(help="First day (YYYY-MM-DD, UTC).")] = "2025-01-06",
    mix: Annotated[str | None, typer.Option(
        help="A named mix (default, ci-heavy, release-heavy, infra-heavy, service-heavy, "
             "platform-heavy) and/or "
             "archetype=weight overrides, comma-separated.")] = None,
    byte_scale: Annotated[float | None, typer.Option(
        help="Make layers real bytes at this fraction of their size (pushable fleets).")] = None,
    snapshot_every: Annotated[int, typer.Option(help="Days between pod list snapshots.")] = 1,
    scanner_every: Annotated[int, typer.Option(help="Days between full scanner passes.")] = 7,
    prehistory_days: Annotated[int, typer.Option(
        help="Days of history before --start that telemetry never saw.")] = 0,
    reuse: Annotated[Reuse, typer.Option(
        help="How often images come back after a long gap (rollbacks, pins, monthly and "
             "quarterly jobs, re-runs, drills; data/README.md). medium: the generator's "
             "long-standing rates.")] = Reuse.medium,
) -> None:
    """Simulate a registry fleet and write its telemetry, pod lists and inventory."""
    from ..fleet import FleetSpec, generate, parse_mix

    try:
        first = date.fromisoformat(start)
    except ValueError:
        raise ConfigError(f"--start {start!r} is not a date (YYYY-MM-DD)", start=start) from None
    spec = FleetSpec(seed=seed, repositories=repositories, days=days, start=first,
                     mix=parse_mix(mix), byte_scale=byte_scale,
                     snapshot_every_days=snapshot_every, scanner_every_days=scanner_every,
                     prehistory_days=prehistory_days, reuse=reuse.value)
    began = time.perf_counter()
    with _progress(repositories + 3) as step:
        files = generate(spec, out, progress=step)
    s = files.summary
    typer.echo(f"fleet of {s['repositories']} repositories over {days} days in {out} "
               f"({time.perf_counter() - began:.1f} s)")
    typer.echo(f"  {files.distribution.name}: {s['events']} events in {s['envelopes']} "
               f"envelopes ({s['duplicate_envelopes']} delivered twice)")
    typer.echo(f"  {files.deploys.name}: {s['deploys']} deploy events")
    typer.echo(f"  {files.pods.name}: {s['snapshots']} snapshots, {s['pods']} pods")
    typer.echo(f"  {files.inventory.name}: {s['manifests']} manifests ({s['alive']} alive, "
               f"{s['alive_untagged']} untagged, {s['deleted']} deleted)")


@fleet_app.command("load-inventory")
def load_inventory_cmd(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="inventory.jsonl, or the fleet directory.")],
    now: Annotated[str | None, typer.Option(help="Scan time (default: the last push).")] = None,
) -> None:
    """Write a fleet's inventory into the store as a registry scan would."""
    from ..fleet import load_inventory

    if path.is_dir():
        path = path / "inventory.jsonl"
    if not path.exists():
        raise ConfigError(f"no inventory at {path}", path=str(path))
    at = None
    if now is not None:
        try:
            at = parse_time(now)
        except ValueError:
            raise ConfigError(f"--now {now!r} is not a time", now=now) from None
    result = load_inventory(state(ctx).store, path, now=at)
    typer.echo(f"loaded {result.manifests} manifests, {result.blobs} blobs, "
               f"{result.children} index children (scan {result.scan_id})")
