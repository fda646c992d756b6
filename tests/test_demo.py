"""``make demo`` for real, at the ``--quick`` size: every step runs against the real
docker-registry, ``tagwarden serve`` and the CLI; only Slack is the loopback fake."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from bot.demo import QUICK, DemoResult, run_demo
from bot.demo.__main__ import main as demo_main
from bot.demo.services import DemoError
from recommender.registry.local import registry_binary

from .conftest import missing

STEPS = 11
# The whole demo runs in the first test's setup: ~3 minutes on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(600)
Demo = tuple[DemoResult, Path, str]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    if registry_binary() is None:
        missing("docker-registry")
    out = tmp_path_factory.mktemp("demo")
    console = Console(file=io.StringIO(), width=120)
    result = run_demo(out, size=QUICK, console=console, env={})
    assert isinstance(console.file, io.StringIO)
    text = console.file.getvalue()
    return result, out, text


def test_every_step_ran_and_the_summary_was_printed(demo: Demo) -> None:
    result, _out, text = demo
    assert len(result.steps) == STEPS
    for title, _seconds, _detail in result.steps:
        assert title in text
    for phrase in ("manifests in the registry", "bytes on disk", "kept by a guardrail",
                   "precision", "Total time"):
        assert phrase in text


def test_the_approved_batch_was_deleted_and_collected_on_disk(
        demo: Demo) -> None:
    r, _out, _text = demo
    before, after = r.storage_before, r.storage_after
    assert before is not None and after is not None
    deleted = r.execution["counts"].get("deleted", 0)
    approved = [b for b in r.batches if b["id"] == r.approved_batch]
    assert approved and approved[0]["state"] not in {"pending", "approved"}
    assert deleted == len([i for i in approved[0]["items"] if i["state"] == "deleted"]) > 0
    # the registry's own storage: exactly the deleted manifests are gone, and GC freed bytes
    assert before.manifests - after.manifests == deleted
    assert after.blobs < before.blobs and after.bytes < before.bytes
    # nothing else was touched: other batches stay pending
    others = [b for b in r.batches if b["id"] != r.approved_batch]
    assert others and all(b["state"] == "pending" for b in others)


def test_live_notifications_model_and_guardrails(demo: Demo) -> None:
    r, _out, _text = demo
    # The registry itself notified the scan's reads and the executor's deletes; they carry
    # tagwarden's user agent, so none of them may count as use of an image.
    assert r.live_by_usage.get("self", 0) > 0
    assert "use" not in r.live_by_usage
    assert r.replay["accepted"] > 0 and r.replay["snapshots"] > 0
    rows = {row["name"]: row for row in r.backtest["results"]}
    assert 0.0 <= rows["model"]["precision"] <= 1.0
    assert any(s["blocked_by"] for s in r.suggestions)
    assert any(s["suggested"] for s in r.suggestions)


def test_report_and_slack_mockup(demo: Demo) -> None:
    r, out, _text = demo
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 2
    approved = next(b for b in r.batches if b["id"] == r.approved_batch)
    assert approved["repository"] in page and "approved in the demo" in page
    mockup = (out / "suggestion-batch.md").read_text(encoding="utf-8")
    assert "[ Approve" in mockup and approved["repository"] in mockup
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["storage_after"]["manifests"] < summary["storage_before"]["manifests"]


def test_everything_it_started_is_stopped(demo: Demo) -> None:
    r, _out, _text = demo
    assert not Path(r.workdir).exists()
    for name, url in r.endpoints.items():
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=2)
        assert name


@pytest.fixture(scope="module")
def ecr_demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    out = tmp_path_factory.mktemp("demo-ecr")
    console = Console(file=io.StringIO(), width=120)
    result = run_demo(out, size=QUICK, console=console, env={}, registry="ecr")
    assert isinstance(console.file, io.StringIO)
    return result, out, console.file.getvalue()


def test_ecr_demo_deletes_the_approved_images_and_keeps_the_protected(ecr_demo: Demo) -> None:
    r, out, text = ecr_demo
    assert r.registry_kind == "ecr" and len(r.steps) == STEPS
    assert "no garbage-collection step" in text
    # the history reached the collector as CloudTrail records, nothing live from ECR
    assert r.replay["accepted"] > 0 and r.replay["snapshots"] > 0 and r.live_events == 0
    approved = next(b for b in r.batches if b["id"] == r.approved_batch)
    deleted = [i["digest"] for i in approved["items"] if i["state"] == "deleted"]
    assert deleted and r.execution["counts"].get("deleted", 0) == len(deleted)
    listed = set(r.images_after)
    for digest in deleted:  # gone from describe_images, at once
        assert f"{approved['repository']}@{digest}" not in listed
    protected = [s for s in r.suggestions
                 if any("protected tag" in b for b in s["blocked_by"])]
    assert protected
    for kept in protected:
        assert f"{kept['repository']}@{kept['digest']}" in listed
    before, after = r.storage_before, r.storage_after
    assert before is not None and after is not None
    assert after.manifests == len(listed) and before.manifests - after.manifests == len(deleted)
    others = [b for b in r.batches if b["id"] != r.approved_batch]
    assert all(b["state"] == "pending" for b in others)
    assert "describe_images" in (out / "report.html").read_text(encoding="utf-8")
    assert not Path(r.workdir).exists()
    for url in r.endpoints.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, timeout=2)


def test_an_unknown_registry_is_refused_before_anything_starts(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    with pytest.raises(DemoError, match="unknown registry 'harbor'"):
        run_demo(tmp_path / "out", size=QUICK, env={}, registry="harbor")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exited:
        demo_main(["--registry", "harbor", "--out", str(tmp_path / "out")])
    assert exited.value.code == 2 and "invalid choice: 'harbor'" in capsys.readouterr().err
