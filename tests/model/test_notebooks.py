"""The review notebooks run end to end on a small generated fleet (they must not rot)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from recommender.cli import main
from recommender.fleet import FleetSpec, generate

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.fixture(scope="module")
def fleet_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime]:
    work = tmp_path_factory.mktemp("nbfleet")
    spec = FleetSpec(seed=1, repositories=6, days=150)
    files = generate(spec, work / "fleet")
    url = f"sqlite:///{work / 'store.db'}"
    for argv in (["fleet", "load-inventory", str(files.inventory)],
                 ["ingest", "distribution", str(files.distribution)],
                 ["ingest", "deploys", str(files.deploys)],
                 ["ingest", "k8s", str(files.pods)]):
        assert main(["--db", url, *argv]) == 0, argv
    now = datetime.combine(spec.start, datetime.min.time(), UTC) + timedelta(days=spec.days)
    return work / "store.db", now


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01-model-review.ipynb", "02-feedback-review.ipynb"])
def test_notebook_runs(name: str, fleet_store: tuple[Path, datetime], tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    db, now = fleet_store
    copy = tmp_path / "store.db"  # the feedback notebook records decisions: its own copy
    shutil.copy(db, copy)
    monkeypatch.setenv("TAGWARDEN_NOTEBOOK_DB", f"sqlite:///{copy}")
    monkeypatch.setenv("TAGWARDEN_NOTEBOOK_NOW", now.isoformat())
    monkeypatch.setenv("TAGWARDEN_NOTEBOOK_HORIZON_DAYS", "30")
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in book.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "Traceback" not in text
    if name.startswith("01"):
        assert "weekly snapshots" in text and "threshold" in text
        assert "model ÷ idle rule inside the guardrails" in text
        assert "threshold efficiency" in text and "weekly steady-state precision" in text
    else:
        assert "denied items: mean P(dead)" in text
