"""tagwarden train / backtest / suggest / why, run as the CLI runs them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from recommender.cli import main
from recommender.store import open_store
from recommender.tagkind import parse_semver

from . import synth


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    url = f"sqlite:///{root / 'store.db'}"
    store = open_store(url)
    synth.generate(store)
    store.dispose()
    config = root / "tagwarden.toml"
    config.write_text(f'[model]\ndir = "{root / "models"}"\nsnapshot_every = "14d"\n')
    return url, config


def run(capsys: pytest.CaptureFixture[str], db: tuple[str, Path], *args: str
        ) -> tuple[int, str, str]:
    code = main(["--db", db[0], "--config", str(db[1]), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_then_suggest_in_every_format(capsys: pytest.CaptureFixture[str],
                                            db: tuple[str, Path]) -> None:
    code, out, _ = run(capsys, db, "train", "--now", "2026-08-29T00:00:00Z")
    assert code == 0 and "promoted" in out and "precision" in out
    code, out, _ = run(capsys, db, "suggest", "--now", "2026-08-29", "--format", "json")
    items = json.loads(out)
    assert code == 0 and items
    for key in ("repository", "digest", "tags", "score", "suggested", "reclaimable_bytes",
                "reasons", "blocked_by", "batch"):
        assert key in items[0]
    assert all(i["suggested"] and not i["blocked_by"] for i in items)
    assert items[0]["batch"] == f"{items[0]['repository']}::{items[0]['kind']}"
    # Ranked by expected bytes.
    expected = [i["score"] * (i["reclaimable_bytes"] or i["bytes"]) for i in items]
    assert expected == sorted(expected, reverse=True)
    code, out, _ = run(capsys, db, "suggest", "--now", "2026-08-29", "--all", "--format", "csv",
                       "--repository", "rel/*")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and rows and all(r["repository"].startswith("rel/") for r in rows)
    kept = [r for r in rows if r["blocked_by"]]
    assert kept and all(r["suggested"] == "False" for r in kept)
    code, out, _ = run(capsys, db, "suggest", "--now", "2026-08-29", "--repository", "ci/app0")
    assert code == 0 and "suggested of" in out and "DELETE?" in out


def test_why_explains_a_kept_release(capsys: pytest.CaptureFixture[str],
                                     db: tuple[str, Path]) -> None:
    _, out, _ = run(capsys, db, "suggest", "--now", "2026-08-29", "--all", "--format", "json",
                    "--repository", "rel/svc0")
    releases = [i for i in json.loads(out) if i["tags"]]
    newest = max(releases, key=lambda i: parse_semver(i["tags"][0]).key())  # type: ignore[union-attr]
    code, out, _ = run(capsys, db, "why", f"rel/svc0@{newest['digest']}", "--now", "2026-08-29")
    assert code == 0 and "verdict: kept" in out and "guardrail: keep-last-" in out
    assert "signal: P(no use in 90 days)" in out


def test_backtest_json(capsys: pytest.CaptureFixture[str], db: tuple[str, Path]) -> None:
    code, out, _ = run(capsys, db, "backtest", "--at", "2026-06-01", "--format", "json")
    report = json.loads(out)
    assert code == 0 and [r["name"] for r in report["results"]] == [
        "model", "idle rule", "idle (whole)", "keep rule", "idle alone"]
    code, out, _ = run(capsys, db, "backtest", "--at", "2026-06-01")
    assert code == 0 and "model reclaims" in out and "idle alone" in out
    assert "inside the guardrails the model reclaims" in out
    assert "threshold efficiency" in out and "weekly runs, model:" in out
    assert report["threshold_efficiency"]["target"] == 0.999
    assert set(report["weekly"]) == {"model", "idle rule", "idle (whole)"}


@pytest.mark.parametrize(("args", "message"), [
    (["suggest", "--now", "yesterday-ish"], "--now"),
    (["backtest", "--at", "2099-01-01"], "has not elapsed"),
    (["train", "--horizon", "-5d"], "--horizon"),
    (["why", "no-digest-here"], "REPOSITORY@sha256"),
    (["why", "rel/svc0@sha256:" + "0" * 64, "--now", "2026-08-29"], "not an alive manifest"),
])
def test_bad_input_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str],
                                          db: tuple[str, Path], args: list[str],
                                          message: str) -> None:
    code, out, err = run(capsys, db, *args)
    assert code == 1 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_suggest_post_sends_batches_to_slack(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """--post records the batches (decisions) and posts them (the fake Slack Web API)."""
    from tests.support.fake_slack import FakeSlack

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    synth.generate(store)
    store.dispose()
    with FakeSlack() as fake:
        config = tmp_path / "tagwarden.toml"
        config.write_text(f'[slack]\napi_url = "{fake.api_url}"\nbot_token = "xoxb-test"\n'
                          'post_interval = "0s"\n[[team]]\nname = "ci"\n'
                          'repositories = ["ci/*"]\nchannel = "C0CI"\napprovers = ["U1"]\n')
        code = main(["--db", url, "--config", str(config), "suggest", "--now", "2026-08-29",
                     "--repository", "ci/app0", "--post"])
        out = capsys.readouterr().out
        assert code == 0 and "rules-only mode: no trained model yet" in out
        posted = fake.calls("chat.postMessage")
        assert f"posted {len(posted)} batches ({len(posted)} new); 0 failed" in out
        assert posted and all(p.args["channel"] == "C0CI" for p in posted)
