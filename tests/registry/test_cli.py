"""``tagwarden scan`` and ``tagwarden inventory`` as a user runs them, against the real
registry with credentials from the environment; errors are one line. The CLI runs in-process
through its entry point (``main``) except once as a subprocess: start-up costs seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recommender.cli import main
from recommender.registry.local import free_port
from recommender.registry.push import push_image
from recommender.registry.sync import RegistryClient

from .conftest import bcrypt_hash

pytestmark = pytest.mark.registry


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TAGWARDEN_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "recommender.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120, env=full_env)


def cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """``main(args)`` in-process, shaped like a finished subprocess."""
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


def one_line_error(done: subprocess.CompletedProcess, text: str) -> None:
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and text in lines[0], done.stderr


def test_scan_then_inventory(tmp_path, auth_registry_factory, capsys, monkeypatch):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"ci:{bcrypt_hash('pw')}\n")
    reg = auth_registry_factory({"htpasswd": {"realm": "t", "path": str(htpasswd)}})
    from recommender.registry.auth import RegistryAuth

    with RegistryClient(reg.url, auth=RegistryAuth("ci", "pw")) as client:
        image = push_image(client, "team/app", "v1", layers=(1000,))
        push_image(client, "team/app", "multi", platforms=["linux/amd64", "linux/arm64"])
        push_image(client, "other/svc", "1.0")
    config = tmp_path / "tagwarden.toml"
    config.write_text(f'[registry]\nurl = "{reg.url}"\nusername = "ci"\n')
    db = f"sqlite:///{tmp_path / 's.db'}"
    monkeypatch.setenv("TAGWARDEN_REGISTRY_PASSWORD", "pw")

    done = cli(capsys, "--config", str(config), "--db", db, "scan", "--repository", "team/*")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("scanned 1 repositories, 2 tags, 4 manifests")

    done = cli(capsys, "--config", str(config), "--db", db, "inventory", "--format", "json")
    assert done.returncode == 0, done.stderr
    listed = {r["digest"]: r for r in json.loads(done.stdout)}
    assert len(listed) == 4
    row = listed[image.digest]
    assert set(row) == {"repository", "digest", "tags", "pushed_at", "last_used_at", "uses",
                        "non_use_pulls", "running", "referenced", "bytes"}
    assert row["tags"] == ["v1"] and row["uses"] == 0 and row["running"] is False
    assert row["referenced"] == []
    assert row["bytes"] == image.size + sum(image.blobs.values())

    done = cli(capsys, "--db", db, "inventory", "--repository", "team/*")
    assert done.returncode == 0, done.stderr
    assert "repository" in done.stdout and "multi" in done.stdout
    assert done.stdout.rstrip().endswith("4 manifests")

    monkeypatch.setenv("TAGWARDEN_REGISTRY_PASSWORD", "wrong")
    done = cli(capsys, "--config", str(config), "--db", db, "scan")
    one_line_error(done, "registry answered 401 UNAUTHORIZED")


def test_scan_errors_are_one_line(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 's.db'}"
    # Commands without a --registry option do not suggest one.
    for command in ("scan", "execute"):
        done = cli(capsys, "--db", db, command)
        one_line_error(done, "registry.url is not set: put the registry's url under [registry]")
        assert "--registry" not in done.stderr
    done = run("--db", db, "scan", "--registry", f"http://127.0.0.1:{free_port()}",
               cwd=tmp_path)
    one_line_error(done, "cannot reach the registry")
