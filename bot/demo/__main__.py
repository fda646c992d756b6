"""``python -m bot.demo`` (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from rich.console import Console

from recommender.errors import TagwardenError

from .run import FULL, QUICK, REGISTRY_KINDS, run_demo


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: everything it started too


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot.demo",
        description="Run tagwarden end to end on a throwaway registry and a generated fleet.")
    parser.add_argument("--quick", action="store_true",
                        help="A smaller fleet (the CI test); every step still runs.")
    parser.add_argument("--out", type=Path, default=Path("data/demo"),
                        help="Where report.html, summary.json and the Slack mock-up go.")
    parser.add_argument("--registry", choices=REGISTRY_KINDS, default="distribution",
                        help="distribution: Debian's docker-registry, its notifications; "
                             "ecr: moto's ECR server, CloudTrail records replayed instead.")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console()
    try:
        run_demo(args.out, size=QUICK if args.quick else FULL, console=console,
                 registry=args.registry)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]: everything the demo started is stopped")
        return 130
    except TagwardenError as exc:
        console.print(f"[red]demo failed:[/red] {exc}", markup=True, highlight=False)
        return 1
    except Exception as exc:  # one readable line, like every tagwarden command; no traceback
        console.print(f"[red]demo failed:[/red] {type(exc).__name__}: {exc}", highlight=False)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
