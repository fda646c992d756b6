"""``tagwarden ingest refs`` and ``tagwarden ingest docker-ps`` as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recommender.cli import main
from recommender.refs import current_references
from recommender.store import open_store
from recommender.timeutil import parse_time

FILES = Path(__file__).parent / "files"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    shutil.copytree(FILES / "checkout", root)
    return root


def listed(db: str, at: str) -> list[tuple[str, str, str]]:
    store = open_store(db)
    try:
        with store.connect() as conn:
            return [(r["source"], r["location"], r["image"])
                    for r in current_references(conn, at=parse_time(at))]
    finally:
        store.dispose()


def test_ingest_refs_reports_and_replaces(checkout: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    args = ["--db", db, "ingest", "refs", str(checkout), "--source", "gitops"]
    assert main([*args, "--at", "2026-05-01T00:00:00Z"]) == 0
    out, err = capsys.readouterr()
    assert ("deploy/base/cron.yaml:19  registry.example.com/team/report:1.4.2  "
            "[CronJob/nightly-report in reports (suspended) container report]") in out
    assert "gitops: 22 references" in out and "3 unresolved, 2 skipped" in out
    assert "stored: 22 added, 0 removed, 0 unchanged" in out
    assert "charts/rendered/web.yaml:50: templated image" in err
    assert "Prober/blackbox not read" in err

    (checkout / "deploy/base/cron.yaml").unlink()
    assert main([*args, "--at", "2026-05-02T00:00:00Z", "--quiet"]) == 0
    out, _ = capsys.readouterr()
    assert "cron.yaml" not in out
    assert "stored: 0 added, 2 removed, 20 unchanged" in out
    assert len(listed(db, "2026-05-01T12:00:00Z")) == 22
    now = listed(db, "2026-05-03T00:00:00Z")
    assert len(now) == 20 and not any("cron.yaml" in loc for _, loc, _ in now)


def test_an_empty_read_does_not_clear_a_source_by_accident(
    checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["--db", db, "ingest", "refs", "--source", "gitops"]
    assert main([*base, str(checkout / "deploy"), "--at", "2026-05-01T00:00:00Z"]) == 0
    assert main([*base, str(empty), "--at", "2026-05-02T00:00:00Z"]) == 1
    assert "declares 8: pass --allow-empty" in capsys.readouterr().err
    assert len(listed(db, "2026-05-03T00:00:00Z")) == 8
    assert main([*base, str(empty), "--at", "2026-05-02T00:00:00Z", "--allow-empty"]) == 0
    assert listed(db, "2026-05-03T00:00:00Z") == []


def test_dry_run_stores_nothing(checkout: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["--db", db, "ingest", "refs", str(checkout / "deploy"), "--dry-run"]) == 0
    assert "dry run, nothing stored" in capsys.readouterr().out
    assert listed(db, "2100-01-01T00:00:00Z") == []


def test_ingest_docker_ps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    host = tmp_path / "build-host-1.jsonl"
    shutil.copy(FILES / "docker-ps.jsonl", host)
    assert main(["--db", db, "ingest", "docker-ps", str(host), "--at",
                 "2026-05-01T00:00:00Z"]) == 0
    out, err = capsys.readouterr()
    assert "docker-ps:build-host-1: 3 references" in out
    assert "runs image id 4e1b0f2c3d5a" in err
    assert [loc for _, loc, _ in listed(db, "2026-05-01T00:00:00Z")] == [
        "build-host-1.jsonl:1", "build-host-1.jsonl:2", "build-host-1.jsonl:3"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "refs", "a", "b"], "several paths need --source"),
        (["ingest", "refs", "nope"], "no such file or directory: nope"),
        (["ingest", "refs", ".", "--at", "yesterday"], "--at:"),
        (["ingest", "refs", ".", "--build-arg", "NOVALUE"], "expected NAME=VALUE"),
        (["ingest", "docker-ps", "ps.txt"], "ps.txt:2: not JSON"),
    ],
)
def test_errors_are_one_line_and_store_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    args: list[str], message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ps.txt").write_text('{"Image": "nginx", "Names": "a"}\nnot json\n')
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["--db", db, *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert listed(db, "2100-01-01T00:00:00Z") == []


def test_a_real_process_prints_one_line_without_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "recommender.cli", "--db", f"sqlite:///{tmp_path / 's.db'}",
         "ingest", "docker-ps", "-"],
        input='{"Image": "nginx"}\n', capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: reading stdin needs --source NAME (the host)"


def test_refs_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[registry]\nurl = "https://registry.example.com"\n')
    base = ["--config", str(config), "--db", f"sqlite:///{tmp_path / 's.db'}"]
    host = tmp_path / "h1.jsonl"
    shutil.copy(FILES / "docker-ps.jsonl", host)
    assert main([*base, "ingest", "docker-ps", str(host), "--at", "2026-05-01T00:00:00Z"]) == 0
    capsys.readouterr()
    assert main([*base, "refs", "list", "--at", "2026-05-02T00:00:00Z"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "docker-ps:h1  h1.jsonl:1  registry.example.com/team/legacy-billing:0.9.7  "
        "-> team/legacy-billing",
        "docker-ps:h1  h1.jsonl:2  registry.example.com/ops/cron@sha256:"
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  -> ops/cron",
        "docker-ps:h1  h1.jsonl:3  nginx  -> (another registry)",
        "3 references from 1 sources at 2026-05-02T00:00:00+00:00",
    ]
    assert main([*base, "refs", "list", "--json", "--at", "2026-04-01T00:00:00Z"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("at", ["1970-01-01T00:00:00Z", "9999-12-31T00:00:00Z"])
def test_ingest_refs_refuses_a_time_no_clock_could_give(
    checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], at: str,
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["--db", db, "ingest", "refs", str(checkout), "--source", "gitops",
                 "--at", at]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --at: ") and "the sender's clock is wrong" in err
    assert len(err.strip().splitlines()) == 1
