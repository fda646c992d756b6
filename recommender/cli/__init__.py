"""The ``tagwarden`` command line. One module per command group; this one wires them.

Global options come before the command: ``tagwarden --config PATH --db URL <command>``.
Errors are one readable line on stderr and a non-zero exit, never a traceback: a bug too,
as ``error: internal error in <command>: <exception>; run with --debug for the traceback``
(``--debug`` or ``TAGWARDEN_DEBUG=1`` prints the traceback as well).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click
import typer

from ..errors import TagwardenError
from .state import State, app

__all__ = ["State", "app", "main"]

# Command groups register themselves on ``app`` when imported (one line each, kept unsorted).
# isort: off
from . import core  # noqa: E402,F401
from . import fleet  # noqa: E402,F401
from . import executor  # noqa: E402,F401
from . import ingest  # noqa: E402,F401
from . import refs  # noqa: E402,F401
from . import serve  # noqa: E402,F401
from . import model  # noqa: E402,F401
from . import registry  # noqa: E402,F401
from . import slack  # noqa: E402,F401
# isort: on


def main(argv: Sequence[str] | None = None) -> int:
    try:
        result = app(args=list(argv) if argv is not None else None, prog_name="tagwarden",
                     standalone_mode=False)
    except (typer.Exit, click.exceptions.Exit) as exc:
        return exc.exit_code
    except (typer.Abort, click.exceptions.Abort):
        print("aborted", file=sys.stderr)
        return 130
    # Typer >= 0.26 carries its own copy of click's exceptions; both kinds are usage errors.
    except (typer.TyperException, click.ClickException) as exc:
        message = exc.format_message()
        if message:  # empty when the help was shown instead (no arguments)
            print(f"error: {message}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2) or 2)
    except TagwardenError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback on request
        command, debug = _where(exc)
        if debug or _env_debug():
            traceback.print_exception(exc, file=sys.stderr)
        print(f"error: internal error in {command}: {_summary(exc)}"
              + ("" if debug or _env_debug() else "; run with --debug for the traceback"),
              file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def _env_debug() -> bool:
    return os.environ.get("TAGWARDEN_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


def _where(exc: BaseException) -> tuple[str, bool]:
    """The command that raised ``exc`` (``ingest distribution``) and whether ``--debug`` was
    given, read from the innermost click context on the traceback: by then click has closed
    the contexts, but the frames that ran the command still hold them."""
    ctx: Any = None
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        found = frame.f_locals.get("ctx")
        # Typer >= 0.26 has a click of its own: its Context is not click's.
        if hasattr(found, "command_path") and hasattr(found, "find_root"):
            ctx = found
    if ctx is None:
        return "tagwarden", False
    path = ctx.command_path.split(" ", 1)
    return (path[1] if len(path) > 1 else path[0]), bool(ctx.find_root().params.get("debug"))


def _summary(exc: BaseException) -> str:
    """``Type: first line of the message``, shortened: it must fit one line."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def _entry() -> None:  # pragma: no cover - console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()

