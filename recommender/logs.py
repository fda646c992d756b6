"""tagwarden's own log lines (loggers ``recommender`` and ``bot``) on standard error.

``serve`` and the CLI call :func:`configure_logging` with ``log.level`` and ``log.format``:
``text`` gives ``LEVEL logger: message``; ``json`` one object a line (``time``, ``level``,
``logger``, ``message``, and ``error`` with the traceback when there is one) for log
collectors that parse JSON. uvicorn's and the libraries' loggers are left as they are.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["JsonFormatter", "configure_logging"]

OURS = ("recommender", "bot")


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (pytest and the CLI's callers
    swap it), not to the stream that was current when logging was configured."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send tagwarden's loggers to standard error at ``level`` in ``fmt`` (``text``/``json``).
    Calling it again replaces the earlier set-up (its handler), never adds a second one."""
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(levelname)s %(name)s: %(message)s")
    for name in OURS:
        logger = logging.getLogger(name)
        logger.setLevel(level.upper())
        for old in [h for h in logger.handlers if isinstance(h, _Stderr)]:
            logger.removeHandler(old)
        handler = _Stderr()
        handler.setFormatter(formatter)
        logger.addHandler(handler)
