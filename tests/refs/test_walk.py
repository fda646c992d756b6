"""Walking a checkout: which files are read, which are not, and where each reference is."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recommender.errors import PayloadError
from recommender.refs import walk
from recommender.refs.walk import file_kind

CHECKOUT = Path(__file__).parent / "files" / "checkout"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    # .git cannot be committed inside the repository: make it here.
    root = tmp_path / "checkout"
    shutil.copytree(CHECKOUT, root)
    (root / ".git").mkdir(exist_ok=True)
    (root / ".git" / "Dockerfile").write_text("FROM should-not-be-read:1.0\n")
    return root


def test_walks_a_whole_checkout(checkout: Path) -> None:
    found = walk([checkout])
    locations = {r.location for r in found.refs}
    assert locations == {
        "docker-compose.yml:4", "docker-compose.yml:9", "docker-compose.yml:14",
        "charts/rendered/web.yaml:31", "charts/rendered/web.yaml:65",
        "deploy/base/app.yaml:25", "deploy/base/app.yaml:27", "deploy/base/app.yaml:30",
        "deploy/base/app.yaml:34", "deploy/base/cron.yaml:16", "deploy/base/cron.yaml:19",
        "deploy/overlays/prod/kustomization.yaml:6", "deploy/overlays/prod/kustomization.yaml:8",
        "ops/backup:2",
        "services/api/Dockerfile:1", "services/api/Dockerfile:9", "services/api/Dockerfile:16",
        "services/api/Dockerfile:26",
        "services/worker/worker.Dockerfile:4", "services/worker/worker.Dockerfile:7",
        "services/worker/worker.Dockerfile:10", "services/worker/worker.Dockerfile:12",
    }
    # node_modules and .git are not entered; the README mentioning FROM is not a Dockerfile
    assert "should-not-be-read" not in " ".join(r.image for r in found.refs)
    assert not any(r.location.startswith("ops/README") for r in found.refs)
    # .env beside the Compose file resolved API_TAG
    assert "registry.example.com/team/api:2.0.0" in {r.image for r in found.refs}
    assert sorted((n.kind, n.location) for n in found.notes) == [
        ("skipped", "charts/web/templates/deployment.yaml:6"),
        ("skipped", "deploy/base/app.yaml:36"),
        ("unresolved", "charts/rendered/web.yaml:50"),
        ("unresolved", "docker-compose.yml:16"),
        ("unresolved", "services/worker/worker.Dockerfile:14"),
    ]
    assert found.files["binary"] == 1  # ops/logo.yaml
    assert found.files["dockerfile"] == 3
    assert found.files["not read"] == 2  # ops/README and .env


def test_locations_do_not_depend_on_where_the_checkout_lives(checkout: Path,
                                                             tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "ci-runner-42"
    shutil.copytree(checkout, other)
    assert [r.location for r in walk([other]).refs] == [r.location for r in walk([checkout]).refs]


def test_huge_files_are_skipped_with_a_note(checkout: Path) -> None:
    found = walk([checkout / "deploy"], max_bytes=700)
    assert "base/app.yaml" in {n.location for n in found.notes_of("skipped")}
    assert "base/cron.yaml:19" in {r.location for r in found.refs}


def test_single_files_and_build_args(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(checkout)
    found = walk(["services/api/Dockerfile", "ops/backup"],
                 build_args={"BASE_REGISTRY": "mirror.example.com"})
    assert [r.location for r in found.refs][:2] == ["services/api/Dockerfile:1",
                                                    "services/api/Dockerfile:9"]
    assert "mirror.example.com/base/python:3.12-slim" in {r.image for r in found.refs}
    assert "ops/backup:2" in {r.location for r in found.refs}


def test_explicit_file_with_unusual_name_is_read_as_yaml(tmp_path: Path) -> None:
    manifest = tmp_path / "rendered.out"
    manifest.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
                        "  containers: [{name: c, image: nginx:1.25}]\n")
    assert [r.image for r in walk([manifest]).refs] == ["nginx:1.25"]


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PayloadError, match="no such file or directory"):
        walk([tmp_path / "nope"])


@pytest.mark.parametrize(
    ("name", "kind"),
    [("Dockerfile", "dockerfile"), ("Containerfile", "dockerfile"),
     ("api.Dockerfile", "dockerfile"), ("Dockerfile.dev", "dockerfile"),
     ("build.dockerfile", "dockerfile"), ("deploy.yaml", "yaml"), ("x.yml", "yaml"),
     ("app.json", "yaml"), ("backup", "sniff"), ("main.go", None), ("README.md", None),
     (".env", None), ("values.yaml.bak", None)],
)
def test_file_kind(name: str, kind: str | None) -> None:
    assert file_kind(name) == kind
