"""Shared fixtures: a clean environment, the store on SQLite and PostgreSQL, a real registry.

Under CI (``CI=true``) a test that needs PostgreSQL or the registry fails when they are missing
instead of skipping, so a green run always means they were exercised.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recommender.registry.local import LocalRegistry, registry_binary
from recommender.store import Store, open_store
from tests.support import postgres

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_ENV_PREFIXES = ("TAGWARDEN_", "SLACK_")
_KEEP = {"TAGWARDEN_TEST_POSTGRES_URL"}


def missing(what: str) -> None:
    """Skip locally, fail under CI."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI but missing", pytrace=False)
    pytest.skip(f"{what} not available")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's settings or secrets."""
    for key in list(os.environ):
        if key.startswith(_ENV_PREFIXES) and key not in _KEEP:
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    url = os.environ.get("TAGWARDEN_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if not postgres.available():
        missing("PostgreSQL (initdb/pg_ctl)")
    cluster = postgres.Cluster().start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server = request.getfixturevalue("postgres_server")
    return postgres.create_database(server, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store, parametrized over SQLite and PostgreSQL (contract tests)."""
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        yield s
    finally:
        s.dispose()


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[type[LocalRegistry]]:
    """Make local registries (``registry_factory(notify_url=...)``); all stopped at the end."""
    if registry_binary() is None:
        missing("docker-registry")
    started: list[LocalRegistry] = []

    def make(**kwargs: object) -> LocalRegistry:
        reg = LocalRegistry(root=tmp_path / f"registry{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(reg)
        return reg.start()

    try:
        yield make  # type: ignore[misc]
    finally:
        for reg in started:
            reg.stop()


@pytest.fixture
def registry(registry_factory) -> LocalRegistry:  # type: ignore[no-untyped-def]
    """A running local registry without notifications."""
    return registry_factory()


@pytest.fixture(scope="session")
def _ecr_session() -> Iterator[object]:
    """moto's ECR server and its ECR-like front on loopback, once per session."""
    from tests.support.ecr import ecr_server

    yield from ecr_server()


@pytest.fixture
def ecr(_ecr_session: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """An empty ECR (``tests.support.ecr.EcrServer``) and fake AWS credentials in the
    environment, so boto3's default chain finds them and never the developer's own."""
    from tests.support.ecr import REGION

    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    _ecr_session.reset()  # type: ignore[attr-defined]
    return _ecr_session
