"""Table tests of the image reference grammar.

Cases follow distribution's ``reference/reference_test.go`` and ``normalize_test.go`` and
go-containerregistry's ``pkg/name/ref_test.go``: the same inputs, the same verdicts.
"""

from __future__ import annotations

import pytest

from recommender.errors import ReferenceError_
from recommender.reference import (
    Reference,
    is_digest,
    managed_repository,
    parse_reference,
    registry_hosts,
)

D64 = "sha256:" + "f" * 64
D512 = "sha512:" + "f" * 128

VALID = [
    # (input, registry, repository, tag, digest)
    ("test_com", "docker.io", "library/test_com", None, None),
    ("test.com:tag", "docker.io", "library/test.com", "tag", None),
    ("test.com:5000", "docker.io", "library/test.com", "5000", None),
    ("test.com/repo:tag", "test.com", "repo", "tag", None),
    ("test:5000/repo", "test:5000", "repo", None, None),
    ("test:5000/repo:tag", "test:5000", "repo", "tag", None),
    (f"test:5000/repo@{D64}", "test:5000", "repo", None, D64),
    (f"test:5000/repo:tag@{D64}", "test:5000", "repo", "tag", D64),
    ("lowercase:Uppercase", "docker.io", "library/lowercase", "Uppercase", None),
    ("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com", "bar/baz/quux", None, None),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com", "bar/baz/quux",
     "some-long-tag", None),
    ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io", "test.example.com/my-app",
     "test.example.com", None),
    ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", "myimage", "xn--n3h.com", None),
    (f"xn--7o8h.com/myimage:xn--7o8h.com@{D512}", "xn--7o8h.com", "myimage", "xn--7o8h.com",
     D512),
    ("foo_bar.com:8080", "docker.io", "library/foo_bar.com", "8080", None),
    ("foo/foo_bar.com:8080", "docker.io", "foo/foo_bar.com", "8080", None),
    ("[2001:db8::1]/repo", "[2001:db8::1]", "repo", None, None),
    ("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "repo", None, None),
    ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]", "repo", "tag", None),
    ("[::1]:5000/repo", "[::1]:5000", "repo", None, None),
    ("1a3f:5000/repo", "1a3f:5000", "repo", None, None),
    ("localhost/repo", "localhost", "repo", None, None),
    ("localhost:5000/team/app:1.2", "localhost:5000", "team/app", "1.2", None),
    ("Foo.Example.com/bar", "Foo.Example.com", "bar", None, None),  # host may be upper case
    ("docker.io/nginx", "docker.io", "library/nginx", None, None),
    ("index.docker.io/nginx:1.25", "docker.io", "library/nginx", "1.25", None),
    ("registry-1.docker.io/bitnami/redis", "docker.io", "bitnami/redis", None, None),
    ("nginx", "docker.io", "library/nginx", None, None),
    ("library/nginx", "docker.io", "library/nginx", None, None),
    ("a__b/c--d/e.f", "docker.io", "a__b/c--d/e.f", None, None),
    ("a" * 10 + ":" + "t" * 128, "docker.io", "library/" + "a" * 10, "t" * 128, None),
    ("a/" * 127 + "a:tag-puts-this-over-max", "docker.io", "a/" * 127 + "a",
     "tag-puts-this-over-max", None),
    (f"ghcr.io/org/app@{D64}", "ghcr.io", "org/app", None, D64),
]

INVALID = [
    # (input, words the message contains)
    ("", "empty"),
    (":justtag", "no repository"),
    (f"@{D64}", "no repository"),
    ("Uppercase:tag", "lowercase"),
    ("test:5000/Uppercase/lowercase:tag", "lowercase"),
    ("a/" * 128 + "a:tag", "longer than 255"),
    ("aa/asdf$$^/aa", "invalid repository component"),
    ("[fe80::1%eth0]:5000/repo", "invalid registry host"),
    ("[2001:db8:3:4::192.0.2.33]:5000/repo", "invalid registry host"),
    ("-foo.com/bar", "invalid registry host"),
    ("foo.com:abc/bar", "invalid registry host"),
    ("example.com/", "no repository"),
    ("repo:" + "t" * 129, "invalid tag"),
    ("repo:-tag", "invalid tag"),
    ("repo:.tag", "invalid tag"),
    ("repo:t\u00e4g", "invalid tag"),  # Go's \w is ASCII only
    ("foo___bar", "invalid repository component"),
    ("foo.-bar", "invalid repository component"),
    ("-foo", "invalid repository component"),
    ("foo-", "invalid repository component"),
    ("foo//bar", "invalid repository component"),
    ("repo@sha256:abc", "invalid digest"),
    ("repo@sha256:" + "F" * 64, "invalid sha256 digest"),
    ("repo@sha256:" + "f" * 65, "invalid sha256 digest"),
    (f"repo@{D64}@{D64}", "invalid digest"),
    ("repo name", "white space"),
    (" nginx", "white space"),
    ("repo:tag:extra", "invalid repository component"),
]


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), VALID)
def test_valid_references(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    assert parse_reference(text) == Reference(registry, repository, tag, digest)


@pytest.mark.parametrize(("text", "words"), INVALID)
def test_invalid_references_name_the_problem(text: str, words: str) -> None:
    with pytest.raises(ReferenceError_) as info:
        parse_reference(text)
    assert words in info.value.message
    assert info.value.detail["reference"] == text


def test_str_round_trips_the_normalized_form() -> None:
    ref = parse_reference(f"nginx:1.25@{D64}")
    assert str(ref) == f"docker.io/library/nginx:1.25@{D64}"
    assert parse_reference(str(ref)) == ref


def test_default_registry_applies_only_without_host() -> None:
    assert parse_reference("team/app", default_registry="reg.local:5000").registry == (
        "reg.local:5000"
    )
    # library/ belongs to Docker Hub alone
    assert parse_reference("app", default_registry="reg.local:5000").repository == "app"


@pytest.mark.parametrize(
    ("value", "ok"),
    [(D64, True), (D512, False), ("sha256:" + "a" * 63, False), (None, False), ("", False)],
)
def test_is_digest(value: str | None, ok: bool) -> None:
    assert is_digest(value) is ok


@pytest.mark.parametrize(
    ("url", "extra", "expected"),
    [
        ("http://127.0.0.1:5000", (), {"127.0.0.1:5000"}),
        ("https://registry.example.com", ("Mirror.Example.com",),
         {"registry.example.com", "registry.example.com:443", "mirror.example.com"}),
        ("http://reg.local", (), {"reg.local", "reg.local:80"}),
        ("registry.example.com:8443", (), {"registry.example.com:8443"}),
        (None, ("index.docker.io",), {"docker.io"}),
        (None, (), set()),
    ],
)
def test_registry_hosts(url: str | None, extra: tuple[str, ...], expected: set[str]) -> None:
    assert registry_hosts(url, extra) == expected


@pytest.mark.parametrize(
    ("text", "hosts", "expected"),
    [
        ("127.0.0.1:5000/team/app:1", {"127.0.0.1:5000"}, "team/app"),
        ("REGISTRY.example.com/team/app", {"registry.example.com"}, "team/app"),
        ("registry.example.com:443/team/app", registry_hosts("https://registry.example.com"),
         "team/app"),
        ("other.example.com/team/app", {"registry.example.com"}, None),
        ("nginx", {"registry.example.com"}, None),
        ("nginx", {"index.docker.io"}, "library/nginx"),
        ("127.0.0.1:5001/team/app", {"127.0.0.1:5000"}, None),
        # nothing configured: everything counts (keeping too much is the safe error)
        ("other.example.com/team/app", set(), "team/app"),
    ],
)
def test_managed_repository(text: str, hosts: set[str], expected: str | None) -> None:
    assert managed_repository(parse_reference(text), hosts) == expected
