"""The command line as a user meets it: a real subprocess, one-line errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recommender.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=120,
    )


def test_migrate_creates_the_store(tmp_path: Path) -> None:
    done = run("--db", f"sqlite:///{tmp_path / 's.db'}", "migrate", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    assert (tmp_path / "s.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--config", "missing.toml", "migrate"), "error: config file not found"),
        (("--db", "nosuchdb://x", "migrate"), "error: cannot open store"),
        (("nosuch",), "error: No such command 'nosuch'"),
        (("inventory", "--format", "xml"), "error: Invalid value for '--format'"),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = run(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(message)


def test_bad_config_value_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[server]\nport = 'x'\n", encoding="utf-8")
    done = run("--config", "c.toml", "migrate", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: setting server.port: expected an integer, got 'x'"


def test_config_show_masks_every_password_and_spells_values_as_the_file_does(
        tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        '[collector]\ntoken = "tok-s3cret"\n'
        '[registry]\nurl = "https://bob:reg-s3cret@registry.example:5000"\n', encoding="utf-8")
    done = run("--config", "c.toml", "--db", "postgresql+psycopg://tw:db-s3cret@db.example/tw",
               "config", "show", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "s3cret" not in done.stdout
    lines = set(done.stdout.splitlines())
    assert {'store.url = "postgresql+psycopg://tw:***@db.example/tw"',
            'registry.url = "https://bob:***@registry.example:5000"',
            'collector.token = "********"',
            'store.raw_retention = "30d"',
            'collector.batch_max_delay = "0.005s"',
            "registry.verify_tls = true",
            "# model.dir is unset"} <= lines


def test_config_typing_prints_the_typed_accessors(tmp_path: Path) -> None:
    done = run("config", "typing", cwd=tmp_path)
    assert done.returncode == 0
    root = Path(__file__).resolve().parents[1]
    assert done.stdout == (root / "recommender/settings_typed.py").read_text(encoding="utf-8")


def test_config_docs_prints_every_setting(tmp_path: Path) -> None:
    done = run("config", "docs", cwd=tmp_path)
    assert done.returncode == 0
    assert "`store.url`" in done.stdout and "`collector.token`" in done.stdout
