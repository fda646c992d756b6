"""The registry seam: what lies outside ``recommender/registry/`` reaches a registry only through
the protocol and the factory, and the factory gives working backends (the real docker-registry
behind the Distribution backend, natively and through a backend with only a synchronous face).
"""

from __future__ import annotations

import ast
import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

import recommender
from recommender import config as config_mod
from recommender import inventory, registry
from recommender.errors import ConfigError, NotFound, Unsupported
from recommender.registry import factory
from recommender.registry.push import push_image
from recommender.registry.threaded import ThreadedRegistry
from recommender.store.tables import manifest_children, manifests, tag_history

ROOT = Path(recommender.__file__).parent
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# Modules of the registry package that are the seam: a backend needs nothing more of the rest
# of tagwarden than these give, and the rest of tagwarden nothing more of a backend.
SEAM_MODULES = {"recommender.registry", "recommender.registry.protocol",
                "recommender.registry.factory", "recommender.registry.models",
                "recommender.registry.mediatypes"}
# The consumers the issue names: typed on the protocol only, built only through the factory.
CONSUMERS = ["inventory", "executor", "backup.py", "scheduler.py", "cli"]


def _sources() -> list[Path]:
    found: list[Path] = []
    for name in CONSUMERS:
        path = ROOT / name
        found.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return found


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, names imported from it, line) for every import in ``path``."""
    package = ".".join(path.relative_to(ROOT.parent).parts[:-1])  # the module's package
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((a.name, [], node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [a.name for a in node.names]
            # ``from .. import registry`` imports a module: count it as that module
            for name in names:
                if f"{module}.{name}" == "recommender.registry":
                    found.append(("recommender.registry", [], node.lineno))
            found.append((module, names, node.lineno))
    return found


def test_consumers_import_only_the_protocol_and_the_factory() -> None:
    exported = set(registry.__all__)
    seen, bad = 0, []
    for path in _sources():
        for module, names, line in _imports(path):
            if module != "recommender.registry" and not module.startswith(
                    "recommender.registry."):
                continue
            seen += 1
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            if module not in SEAM_MODULES:
                bad.append(f"{where} imports {module}")
            elif module == "recommender.registry" and not set(names) <= exported | {
                    "mediatypes"}:
                bad.append(f"{where} imports {sorted(set(names) - exported)} from the package")
    assert bad == []
    assert seen >= 10  # the walk found the consumers' registry imports (not a vacuous pass)


def test_the_package_exports_the_seam_and_no_backend() -> None:
    init = ROOT / "registry" / "__init__.py"
    modules = {m for m, _, _ in _imports(init) if m.startswith("recommender.registry.")}
    assert modules == {"recommender.registry.factory", "recommender.registry.models",
                       "recommender.registry.protocol"}
    assert {"Registry", "AsyncRegistry", "open", "open_async", "ReclaimHint"} <= set(
        registry.__all__)


def _config(tmp_path: Path, text: str) -> config_mod.Config:
    path = tmp_path / "tagwarden.toml"
    path.write_text(text, encoding="utf-8")
    return config_mod.load(path, env={})


def test_an_unknown_or_missing_kind_is_one_clear_error(tmp_path, monkeypatch) -> None:
    config = _config(tmp_path, '[registry]\nkind = "harbour"\nurl = "http://127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match="registry.kind 'harbour' is not one of") as err:
        registry.open(config)
    assert err.value.detail["setting"] == "registry.kind"
    monkeypatch.setitem(factory.KINDS, "elsewhere", "recommender.registry.elsewhere")
    with pytest.raises(ConfigError, match="'elsewhere' is not available in this build"):
        registry.open(config, kind="elsewhere")
    with pytest.raises(ConfigError, match="registry.url is not set"):
        registry.open(_config(tmp_path, ""))


def test_restoring_into_a_registry_that_cannot_be_pushed_to_is_refused(tmp_path) -> None:
    config = _config(tmp_path, '[registry]\nkind = "ecr"\n')
    with pytest.raises(ConfigError, match="needs a Distribution registry"):
        registry.open_writable(config)


@pytest.mark.registry
def test_the_distribution_backend_through_the_factory(tmp_path, registry_factory) -> None:
    local = registry_factory()
    config = _config(tmp_path, f'[registry]\nurl = "{local.url}"\n'
                               f'gc_config = "{local.config_path}"\n')
    writable = registry.open_writable(config)
    try:
        single = push_image(writable, "team/app", "v1", seed=1)
        multi = push_image(writable, "team/app", "v2", seed=2,
                           platforms=["linux/amd64", "linux/arm64"])
        push_image(writable, "team/app", "also-v1", seed=1)
    finally:
        writable.close()
    calls: list[tuple[str, str, int | str]] = []

    class Recorder:
        def record(self, operation: str, target: str, status: int | str,
                   retry_after: float | None = None) -> None:
            calls.append((operation, target, status))

    reg = registry.open(config, recorder=Recorder())
    try:
        assert reg.location == local.url
        assert reg.reclaim.kind is registry.Reclaim.OFFLINE_GC
        assert reg.reclaim.command == f"docker-registry garbage-collect {local.config_path}"
        assert reg.repositories() == ["team/app"]
        assert sorted(reg.list_tags("team/app")) == ["also-v1", "v1", "v2"]
        assert reg.list_images("team/app") is None  # no bulk listing: tag by tag
        index = reg.get_manifest("team/app", "v2")
        children = [c["digest"] for c in index.children]
        assert index.digest == multi.digest and len(children) == 2
        assert reg.resolve("team/app", "v1") == single.digest
        assert reg.head_manifest("team/app", "nope") is None
        with pytest.raises(Unsupported):
            reg.untag("team/app", "also-v1")  # Distribution 2 cannot remove a tag alone
        assert reg.resolve("team/app", "also-v1") == single.digest
        gone = reg.delete_many("team/app", [multi.digest, *children, multi.digest])
        assert [(d.digest, d.outcome) for d in gone] == [
            (multi.digest, "deleted"), (children[0], "deleted"), (children[1], "deleted"),
            (multi.digest, "gone")]
        with pytest.raises(NotFound):
            reg.resolve("team/app", "v2")
        assert reg.head_manifest("team/app", single.digest) == single.digest
    finally:
        reg.close()
    deletes = [c for c in calls if c[0] == "DELETE"]
    assert [c[2] for c in deletes] == [400, 202, 202, 202, 404]  # untag refused, then four
    assert all("team/app/manifests/" in c[1] for c in deletes)


def _inventory(store) -> tuple[list, list, list]:  # type: ignore[no-untyped-def]
    with store.connect() as conn:
        return (
            sorted(conn.execute(select(manifests.c.digest, manifests.c.size,
                                       manifests.c.total_bytes, manifests.c.is_index,
                                       manifests.c.platform)).all()),
            sorted(conn.execute(select(manifest_children.c.parent,
                                       manifest_children.c.child)).all()),
            sorted(conn.execute(select(tag_history.c.tag, tag_history.c.digest)).all()),
        )


@pytest.mark.registry
def test_a_backend_with_only_a_sync_face_scans_through_threads(
        tmp_path, registry_factory, store, monkeypatch) -> None:
    """What a new backend must provide is ``open_registry`` in a module the factory names: the
    Distribution backend's alone, run in threads by the factory, scans into the same inventory
    as the native asyncio one."""
    local = registry_factory()
    config = _config(tmp_path, f'[registry]\nurl = "{local.url}"\n')
    writable = registry.open_writable(config)
    try:
        push_image(writable, "team/app", "v1", seed=1)
        push_image(writable, "team/app", "v2", seed=2, platforms=["linux/amd64", "linux/arm64"])
        push_image(writable, "team/web", "v1", seed=3)
    finally:
        writable.close()
    monkeypatch.setitem(factory.KINDS, "sync-only", "tests.support.sync_only_backend")

    def scan(kind: str) -> tuple[list, list, list]:
        async def run() -> inventory.ScanReport:
            client = registry.open_async(config, kind=kind, max_connections=4)
            try:
                assert isinstance(client, ThreadedRegistry) == (kind == "sync-only")
                return await inventory.scan_async(store, client, now=T0, concurrency=4)
            finally:
                await client.aclose()

        report = asyncio.run(run())
        assert report.errors == [] and report.tags == 3 and report.repositories == 2
        return _inventory(store)

    threaded = scan("sync-only")
    assert len(threaded[0]) == 5 and len(threaded[1]) == 2 and len(threaded[2]) == 3
    assert scan("distribution") == threaded
