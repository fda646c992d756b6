"""Tag-name kinds and semantic-version order (table tests)."""

from __future__ import annotations

import pytest

from recommender.tagkind import classify, parse_semver, primary_kind

SIG = "sha256-" + "ab" * 32


@pytest.mark.parametrize(("tag", "kind"), [
    ("v1.4.2", "semver"), ("1.4.2", "semver"), ("1.4", "semver"), ("v3", "semver"),
    ("1.4.2+build.7", "semver"), ("2.0.0-rc.1", "prerelease"), ("v1.0.0-beta", "prerelease"),
    ("3f2a9c1", "commit"), ("sha-3f2a9c1d", "commit"), ("main-3f2a9c1", "commit"),
    ("1234", "build"), ("build-77", "build"), ("ci-12", "build"),
    ("20240315", "date"), ("2024-03-15", "date"), ("2024.03.15-1", "date"),
    ("feature-login", "branch"), ("release-2024", "branch"),
    ("pr-12", "pr"), ("PR1234", "pr"), ("mr-3", "pr"),
    ("latest", "floating"), ("main", "floating"), ("stable", "floating"),
    ("test", "test"), ("dev-foo", "test"), ("tmp", "test"),
    (SIG + ".sig", "signature"), (SIG + ".att", "signature"), (SIG + ".sbom", "signature"),
    ("", "other"), (None, "other"),
])
def test_classify(tag: str | None, kind: str) -> None:
    assert classify(tag) == kind


def test_semver_precedence_follows_the_spec() -> None:
    ordered = ["0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
               "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.9.0", "1.10.0",
               "2.0.0"]
    shuffled = list(reversed(ordered))
    assert sorted(shuffled, key=lambda s: parse_semver(s).key()) == ordered  # type: ignore[union-attr]


def test_semver_ignores_build_metadata_and_prefix() -> None:
    a, b = parse_semver("v1.2.3+build.1"), parse_semver("1.2.3+build.9")
    assert a is not None and b is not None and a.key() == b.key()
    assert parse_semver("1234") is None and parse_semver("2024-03-15") is None
    assert parse_semver("1.2.3.4") is None and parse_semver("latest") is None


def test_primary_kind_prefers_the_release_alias() -> None:
    assert primary_kind(["sha-3f2a9c1", "v1.2.0"]) == "semver"
    assert primary_kind([]) == "untagged"
    assert primary_kind(["build-7", "feature-x"]) == "build"
