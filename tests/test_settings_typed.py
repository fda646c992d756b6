"""Typed settings: the generated overloads stay in step with the table, match the values
``load`` produces, and make mypy reject an unknown key or a misused value."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from recommender import config as cfg
from recommender.settings import python_type, render_typing

ROOT = Path(__file__).resolve().parents[1]

# The runtime class behind each annotation the generator writes.
RUNTIME_CLASSES = {"str": str, "int": int, "float": float, "bool": bool,
                   "timedelta": timedelta, "tuple[str, ...]": tuple, "Secret": cfg.Secret}


def test_generated_overloads_are_current() -> None:
    typed = (ROOT / "recommender/settings_typed.py").read_text(encoding="utf-8")
    assert typed == render_typing(), "run `make typing` after changing recommender/settings.py"
    for setting in cfg.SETTINGS:
        assert f'Literal["{setting.key}"]' in typed


def test_each_annotation_matches_the_loaded_value() -> None:
    config = cfg.load(None, env={}, overrides={
        "collector.token": "t", "registry.url": "http://r", "registry.password": "p"})
    for setting in cfg.SETTINGS:
        annotation = python_type(setting)
        value = config[setting.key]  # type: ignore[call-overload]  # every key, on purpose
        if value is None:
            assert annotation.endswith("| None"), setting.key
            continue
        runtime = RUNTIME_CLASSES[annotation.removesuffix(" | None")]
        assert isinstance(value, runtime), (setting.key, annotation, value)
        assert not (runtime is int and isinstance(value, bool)), setting.key


def test_get_reads_a_key_named_at_run_time() -> None:
    config = cfg.load(None, env={})
    key = "registry.concurrency"
    assert config.get(key) == config["registry.concurrency"] == 16
    with pytest.raises(KeyError, match="unknown setting 'registry.urll'"):
        config.get("registry.urll")


SNIPPET = '''\
from datetime import timedelta
from recommender.config import Config

def use(config: Config, key: str) -> None:
    timeout: timedelta = config["registry.timeout"]
    url = config["registry.urll"]
    workers: str = config["registry.concurrency"]
    anything = config.get(key)
'''


def test_mypy_rejects_an_unknown_key_and_a_wrong_type(tmp_path: Path) -> None:
    (tmp_path / "snippet.py").write_text(SNIPPET, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--follow-imports=silent", "--cache-dir=/dev/null", "--no-error-summary",
         "--hide-error-context", "--no-pretty", str(tmp_path / "snippet.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    errors = [line.split(": ", 1)[1] for line in done.stdout.splitlines() if ": error: " in line]
    assert done.returncode == 1, done.stdout + done.stderr
    assert errors == [
        'error: No overload variant of "__getitem__" of "TypedSettings" matches argument '
        'type "str"  [call-overload]',
        'error: Incompatible types in assignment (expression has type "int", variable has '
        'type "str")  [assignment]',
    ], done.stdout
    assert [line.split(":")[1] for line in done.stdout.splitlines() if ": error: " in line] \
        == ["6", "7"]
