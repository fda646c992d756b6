"""The executor's commands end to end, and the backup/restore round trip on the real registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from recommender.cli import main
from recommender.config import load
from recommender.executor import Executor
from recommender.registry.sync import RegistryClient
from recommender.store.tables import audit_log

from .conftest import World
from .helpers import later


def _cli(world: World, store_url: str, *args: str) -> list[str]:
    return ["--config", str(world.config.path), "--db", store_url, *args]


def test_execute_dry_run_then_real_then_audit(world: World, store_url: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    old = world.push("payments/api", ["v1"])
    world.approve(old, ["v1"])
    now = later(26).isoformat()
    assert main(_cli(world, store_url, "execute", "--now", now, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert f"would_delete payments/api@{old.digest} (v1)" in out and "dry run: 1 would_delete" \
        in out
    assert world.client.head_manifest("payments/api", old.digest) == old.digest

    assert main(_cli(world, store_url, "execute", "--now", now, "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"deleted": 1} and report["reclaimable_bytes"] > 0
    assert report["gc_command"] == f"docker-registry garbage-collect {world.registry.config_path}"
    assert world.client.head_manifest("payments/api", old.digest) is None

    assert main(_cli(world, store_url, "batches")) == 0
    assert "done      payments payments/api (release): 1 deleted" in capsys.readouterr().out

    assert main(_cli(world, store_url, "audit", "verify")) == 0
    assert "audit log intact" in capsys.readouterr().out
    assert main(_cli(world, store_url, "audit", "export", "--format", "jsonl")) == 0
    kinds = [json.loads(line)["kind"] for line in capsys.readouterr().out.splitlines()]
    assert kinds[0] == "batch.recorded" and "item.deleted" in kinds and kinds[-1] == "execute.run"

    with world.store.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.kind == "item.deleted")
                     .values(actor="someone-else"))
    assert main(_cli(world, store_url, "audit", "verify")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: audit log broken at row ") and err[-1] == "\n" \
        and err.count("\n") == 1


def test_bad_input_is_one_line(world: World, store_url: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(world, store_url, "execute", "--now", "yesterday-ish")) == 1
    assert capsys.readouterr().err.startswith("error: --now:")
    assert main(_cli(world, store_url, "audit", "export", "--format", "xml")) == 1
    assert "unknown export format" in capsys.readouterr().err
    assert main(_cli(world, store_url, "restore", str(world.tmp / "nothing-here"))) == 1
    assert "no backup at" in capsys.readouterr().err


def test_backup_before_delete_and_restore_round_trip(world: World, store_url: str,
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    backups = tmp_path / "backups"
    assert world.config.path is not None
    cfg = load(world.config.path, env={}, overrides={"executor.backup_dir": str(backups)})
    single = world.push("payments/api", ["v1", "v1.0"])
    index = world.push("payments/web", ["v7"], platforms=["linux/amd64", "linux/arm64"])
    world.approve(single, ["v1", "v1.0"])
    world.approve(index, ["v7"])
    report = Executor(world.store, world.client, cfg, calls=world.calls).run_due(later(26))
    assert sorted(o.outcome for o in report.outcomes) == ["deleted", "deleted"]
    assert world.client.head_manifest("payments/api", single.digest) is None
    assert world.client.head_manifest("payments/web", index.digest) is None

    world.registry.stop()
    world.registry.garbage_collect()  # the blobs are really gone from the registry
    world.registry.start()
    assert not set(single.blobs) & world.registry.blob_files()

    assert main(_cli(world, store_url, "restore", str(backups))) == 0
    out = capsys.readouterr().out
    assert f"restored payments/api@{single.digest} (v1,v1.0)" in out
    assert f"restored payments/web@{index.digest} (v7)" in out
    assert world.client.resolve("payments/api", "v1") == single.digest
    assert world.client.resolve("payments/api", "v1.0") == single.digest
    assert world.client.resolve("payments/web", "v7") == index.digest
    for child in index.children:
        for blob in child.blobs:
            assert world.client.get_blob("payments/web", blob)


def test_backup_into_another_registry_and_copy_back(world: World, store_url: str,
                                                    registry_factory: Any,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    spare = registry_factory()
    assert world.config.path is not None
    text = world.config.path.read_text(encoding="utf-8")
    world.config.path.write_text(text.replace(
        "[registry]", f'[executor]\nbackup_registry = "{spare.url}"\n\n[registry]'),
        encoding="utf-8")
    cfg = load(world.config.path, env={})
    index = world.push("payments/web", ["v7", "v7.0"], platforms=["linux/amd64", "linux/arm64"])
    world.approve(index, ["v7", "v7.0"])
    report = Executor(world.store, world.client, cfg, calls=world.calls).run_due(later(26))
    assert [o.outcome for o in report.outcomes] == ["deleted"]
    assert world.client.head_manifest("payments/web", index.digest) is None
    backup = RegistryClient(spare.url)
    try:
        assert backup.resolve("payments/web", "v7") == index.digest
        assert sorted(backup.list_tags("payments/web")) == ["v7", "v7.0"]
    finally:
        backup.close()

    ref = f"payments/web@{index.digest}"
    assert main(_cli(world, store_url, "restore", "--from-registry", spare.url, ref)) == 0
    assert f"restored {ref} (v7,v7.0)" in capsys.readouterr().out
    assert world.client.resolve("payments/web", "v7.0") == index.digest
    for child in index.children:
        assert world.client.head_manifest("payments/web", child.digest) == child.digest
    assert main(_cli(world, store_url, "restore", "--from-registry", spare.url, "nonsense")) == 1
    assert "expected REPO@DIGEST" in capsys.readouterr().err
