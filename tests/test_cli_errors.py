"""Every command, run against a store it cannot use, fails in one line: never a traceback.

The commands are enumerated from the Typer app, so a new command is covered the day it is
added. Required arguments get a placeholder by parameter name (an input file otherwise).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from recommender.cli import app, main

DIGEST = "sha256:" + "ab" * 32
# A value for a required parameter, by its name; anything else gets an input file.
PLACEHOLDERS = {"at": "2026-01-01T00:00:00Z", "reference": f"shop/web@{DIGEST}"}
BROKEN_STORES = {
    "not-sqlite": "sqlite:///{tmp}/not-a-database.db",
    "postgres-nobody-listens": "postgresql://tagwarden@127.0.0.1:1/none",
}


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield path, command
        return
    for name, sub in sorted(subcommands.items()):
        yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(typer.main.get_command(app)))


def _argv(path: tuple[str, ...], command: Any, tmp: Path) -> list[str]:
    argv = list(path)
    for param in command.params:
        if not param.required:
            continue
        value = PLACEHOLDERS.get(param.name, str(tmp / "input.jsonl"))
        if param.param_type_name == "option":
            argv += [param.opts[0], value]
        else:
            argv.append(value)
    return argv


def test_every_command_is_enumerated() -> None:
    assert len(COMMANDS) >= 25
    assert {("suggest",), ("train",), ("ingest", "distribution"), ("serve",)} <= set(COMMANDS)


@pytest.mark.parametrize("store", sorted(BROKEN_STORES))
def test_every_command_fails_in_one_line_on_a_broken_store(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "not-a-database.db").write_bytes(b"this is not an SQLite database\n" * 100)
    (tmp_path / "input.jsonl").write_text("{}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # what a command writes by default (fleet generate) lands here
    monkeypatch.setenv("TAGWARDEN_COLLECTOR_TOKEN", "t")  # serve's start-up warning otherwise
    url = BROKEN_STORES[store].format(tmp=tmp_path)
    store_errors = []
    for path, command in COMMANDS.items():
        code = main(["--db", url, *_argv(path, command, tmp_path)])
        err = capsys.readouterr().err
        name = " ".join(path)
        assert "Traceback" not in err, f"{name}: {err}"
        lines = err.strip().splitlines()
        if code == 0:
            assert not lines, f"{name} succeeded but said {err}"
            continue
        assert len(lines) == 1, f"{name}: {err}"
        assert lines[0].startswith("error: "), f"{name}: {err}"
        assert "internal error" not in lines[0], f"{name}: {err}"
        if "cannot open the store" in lines[0]:
            store_errors.append(name)
    # Most commands read the store: they must have said that it cannot be opened.
    assert {"suggest", "train", "inventory", "batches", "ingest distribution"} <= set(store_errors)


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "recommender.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120, env={"PATH": "/usr/bin:/bin", **env})


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.db").write_bytes(b"hello, not a database\n" * 50)
    done = run("--db", "sqlite:///x.db", "suggest", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: cannot open the store sqlite:///x.db: "
                                   "file is not a database")


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_bytes(b'[server]\nhost = "caf\xe9"\n')
    done = run("--config", "c.toml", "suggest", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: config file c.toml is not UTF-8 text "
                                   "(byte 0xe9 at offset 20)")


def _crash(*_args: Any, **_kwargs: Any) -> None:
    raise IndexError("boolean index did not match indexed array\nsecond line")


def test_an_unexpected_exception_is_one_line_naming_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recommender import model

    monkeypatch.setattr(model, "train", _crash)
    assert main(["--db", f"sqlite:///{tmp_path / 's.db'}", "train"]) == 1
    err = capsys.readouterr().err
    assert err == ("error: internal error in train: IndexError: boolean index did not match "
                   "indexed array; run with --debug for the traceback\n")


@pytest.mark.parametrize("how", ["option", "environment"])
def test_debug_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    from recommender import model

    monkeypatch.setattr(model, "train", _crash)
    argv = ["--db", f"sqlite:///{tmp_path / 's.db'}", "train"]
    if how == "option":
        argv.insert(0, "--debug")
    else:
        monkeypatch.setenv("TAGWARDEN_DEBUG", "1")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in _crash" in err
    assert err.endswith("error: internal error in train: IndexError: boolean index did not "
                        "match indexed array\n")


def test_a_nested_command_is_named_in_full(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from recommender.cli import ingest

    monkeypatch.setattr(ingest, "_ingest_events", _crash)
    (tmp_path / "e.jsonl").write_text("{}\n", encoding="utf-8")
    assert main(["--db", f"sqlite:///{tmp_path / 's.db'}", "ingest", "deploys",
                 str(tmp_path / "e.jsonl")]) == 1
    assert capsys.readouterr().err.startswith(
        "error: internal error in ingest deploys: IndexError: ")
