"""tagwarden's loggers go to standard error at ``log.level``, as text or JSON lines."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from recommender import config as config_mod
from recommender.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_loggers() -> Iterator[None]:
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers))
             for name in ("recommender", "bot")}
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers


def test_json_lines_at_the_configured_level(capsys: pytest.CaptureFixture[str]) -> None:
    config = config_mod.load(env={}, overrides={"log.format": "JSON", "log.level": "warning"})
    configure_logging(config["log.level"], config["log.format"])
    configure_logging(config["log.level"], config["log.format"])  # again: still one handler
    logging.getLogger("recommender.scheduler").info("not shown")
    logging.getLogger("recommender.scheduler").warning("r1 lost the scheduler lead (%s)", "why")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["level"] == "WARNING" and line["logger"] == "recommender.scheduler"
    assert line["message"] == "r1 lost the scheduler lead (why)"
    assert line["time"].endswith("+00:00")


def test_text_lines_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    config = config_mod.load(env={})
    configure_logging(config["log.level"], config["log.format"])
    logging.getLogger("bot.serving").info("Slack is ready")
    assert capsys.readouterr().err == "INFO bot.serving: Slack is ready\n"
