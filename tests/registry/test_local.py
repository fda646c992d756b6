"""LocalRegistry runs docker-registry with the Go GC settings it documents."""

from __future__ import annotations

from pathlib import Path

from recommender.registry.local import LocalRegistry
from recommender.registry.push import layer_tar
from recommender.registry.sync import RegistryClient


def _process_environment(registry: LocalRegistry) -> dict[str, str]:
    assert registry._proc is not None
    raw = Path(f"/proc/{registry._proc.pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_the_registry_process_runs_with_a_soft_memory_limit_and_serves_blobs(
        registry_factory: type[LocalRegistry]) -> None:
    registry = registry_factory(memory_limit="64MiB")
    env = _process_environment(registry)
    assert (env.get("GOGC"), env.get("GOMEMLIMIT")) == ("off", "64MiB")
    # Every blob GET allocates a 4 MiB buffer in the registry: many more GETs than fit in
    # the limit, so the collector must run and the registry keep serving.
    data = layer_tar("local-gc", 1024)
    with RegistryClient(registry.url) as client:
        digest = client.push_blob("gc/probe", data)
        for _ in range(40):
            assert client.get_blob("gc/probe", digest) == data
    assert registry.running


def test_no_memory_limit_keeps_gos_defaults(registry_factory: type[LocalRegistry]) -> None:
    registry = registry_factory(memory_limit=None)
    env = _process_environment(registry)
    assert "GOGC" not in env and "GOMEMLIMIT" not in env
    with RegistryClient(registry.url) as client:
        client.ping()
