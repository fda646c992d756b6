"""The ``tagwarden`` command line. One module per command group; this one wires them.

Global options come before the command: ``tagwarden --config PATH --db URL <command>``.
Errors are one readable line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

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
    return result if isinstance(result, int) else 0


def _entry() -> None:  # pragma: no cover - console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()

