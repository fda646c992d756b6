"""What a tag name says about the image it points at, and semantic-version ordering.

A tag's *kind* (a release ``v1.4.2``, a CI build ``sha-3f2a9c1``, a PR image ``pr-1234``, a
floating ``latest``, a cosign ``sha256-<hex>.sig``) is among the strongest hints of how long an
image stays useful, and semantic versions give the order that keep-last-N needs: push order is
not version order (a 1.9.7 hotfix pushed after 2.0.0 is still older).

:func:`parse_semver` accepts SemVer 2.0 plus the forms registries actually carry: a leading
``v``, two-part ``1.4``, and one-part ``3`` only when followed by a pre-release or build. The
sort key orders by SemVer precedence (a pre-release sorts before its release; numeric
pre-release identifiers numerically, below alphanumeric ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "KINDS",
    "SemVer",
    "classify",
    "parse_semver",
    "primary_kind",
]

KINDS = (
    "semver",  # a release: v1.4.2, 2.0, 1.4.2+build.7
    "prerelease",  # 1.5.0-rc.1, v2.0.0-beta
    "commit",  # a commit SHA, alone or prefixed: 3f2a9c1, sha-3f2a9c1, main-3f2a9c1d
    "build",  # a build number: 1234, build-1234, ci-77
    "date",  # 20240315, 2024-03-15, 2024.03.15-1
    "branch",  # feature-login, main-build, release-2024
    "pr",  # pr-1234, pr1234, mr-12
    "floating",  # latest, stable, main, master, edge, nightly, dev-latest
    "test",  # test, dev, tmp, scratch, experiment-...
    "signature",  # cosign sha256-<hex>.sig / .att / .sbom
    "other",
)

_SEMVER = re.compile(
    r"^[vV]?(?P<major>0|[1-9]\d*)(?:\.(?P<minor>0|[1-9]\d*))?(?:\.(?P<patch>0|[1-9]\d*))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_SIGNATURE = re.compile(r"^sha256-[0-9a-f]{64}(?:\.(?:sig|att|sbom|[a-z]+))?$")
_COMMIT = re.compile(r"^(?:[a-z0-9._-]+[-_.])?(?:g|sha-?)?(?P<hex>[0-9a-f]{7,40})$")
_PR = re.compile(r"^(?:pr|mr|pull|merge-request)[-_.]?\d+(?:[-_.].*)?$", re.IGNORECASE)
_DATE = re.compile(
    r"^(?:[a-z]+[-_.])?(?:19|20)\d{2}[-_.]?(?:0[1-9]|1[0-2])[-_.]?(?:0[1-9]|[12]\d|3[01])"
    r"(?:[-_.tT]?\d{0,6})?(?:[-_.].*)?$"
)
_BUILD = re.compile(r"^(?:(?:build|b|ci|run|job|rev|r)[-_.]?)?\d{1,9}$", re.IGNORECASE)
_FLOATING = frozenset({
    "latest", "stable", "main", "master", "edge", "nightly", "current", "prod", "production",
    "staging", "release", "lts", "head", "trunk", "develop", "canary", "beta", "alpha", "next",
})
_TEST = re.compile(r"^(?:test|tests|testing|dev|tmp|temp|scratch|wip|experiment|exp|sandbox|"
                   r"debug|poc|demo|try)(?:$|[-_.].*)", re.IGNORECASE)
_BRANCH = re.compile(r"^[a-z][a-z0-9]*(?:[-_./][a-z0-9]+)+$", re.IGNORECASE)


@dataclass(frozen=True, order=False)
class SemVer:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: str = ""

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    @property
    def line(self) -> tuple[int, int]:
        """The release line (major, minor) a patch belongs to."""
        return (self.major, self.minor)

    def key(self) -> tuple[object, ...]:
        """SemVer precedence: build metadata is ignored; a release outranks its pre-releases."""
        if not self.prerelease:
            pre: tuple[object, ...] = ((1,),)
        else:
            # Each identifier: numeric ones compare numerically and rank below alphanumeric.
            pre = ((0,), *(((0, int(p), "") if p.isdigit() else (1, 0, p))
                           for p in self.prerelease))
        return (self.major, self.minor, self.patch, pre)

    def __lt__(self, other: SemVer) -> bool:
        return self.key() < other.key()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        return text + (f"+{self.build}" if self.build else "")


# Training asks about every tag of every alive manifest at every replayed instant: the caches
# hold a large fleet's distinct tags (a year of 500 repositories has a few hundred thousand),
# where a smaller one would evict each tag before the next instant asks again.
_TAGS_CACHED = 1 << 19


@lru_cache(maxsize=_TAGS_CACHED)
def parse_semver(tag: str) -> SemVer | None:
    """The semantic version a tag names, or ``None`` (``1234`` alone is a build number)."""
    m = _SEMVER.match(tag)
    if not m:
        return None
    has_minor = m.group("minor") is not None
    if not has_minor and not (m.group("pre") or tag[:1] in "vV"):
        return None  # a bare integer is a build number, not version 1234.0.0
    if not has_minor and int(m.group("major")) >= 1000:
        return None  # '2024-03-15' is a date, '1234-abc' a build, not major version 2024
    return SemVer(
        int(m.group("major")),
        int(m.group("minor") or 0),
        int(m.group("patch") or 0),
        tuple(m.group("pre").split(".")) if m.group("pre") else (),
        m.group("build") or "",
    )


@lru_cache(maxsize=_TAGS_CACHED)
def classify(tag: str | None) -> str:
    """The kind of one tag name (one of :data:`KINDS`); ``None`` or '' is ``other``."""
    if not tag:
        return "other"
    lower = tag.lower()
    if _SIGNATURE.match(lower):
        return "signature"
    if lower in _FLOATING:
        return "floating"
    if _PR.match(lower):
        return "pr"
    version = parse_semver(tag)
    if version is not None:
        return "prerelease" if version.is_prerelease else "semver"
    if _TEST.match(lower):
        return "test"
    if _DATE.match(lower):
        return "date"
    if _BUILD.match(lower):
        return "build"
    m = _COMMIT.match(lower)
    # A commit SHA has letters and digits; all-digit strings were builds above.
    if m and re.search(r"[a-f]", m.group("hex")) and re.search(r"\d", m.group("hex")):
        return "commit"
    if _BRANCH.match(lower) or re.fullmatch(r"[a-z][a-z0-9]*", lower):
        return "branch"
    return "other"


# When a digest carries several tags, the kind that best describes it (a release aliasing a
# build is a release).
_PRIORITY = ("signature", "semver", "prerelease", "floating", "date", "build", "commit", "pr",
             "branch", "test", "other")


def primary_kind(tags: list[str] | tuple[str, ...] | set[str]) -> str:
    """The most telling kind among a digest's tags; ``untagged`` when it has none."""
    if not tags:
        return "untagged"
    kinds = {classify(t) for t in tags}
    return next(k for k in _PRIORITY if k in kinds)
