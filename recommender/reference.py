"""Image references: the distribution reference grammar, parsed strictly.

``[host[:port]/]path[/path...][:tag][@algorithm:hex]``, as in distribution's
``reference/regexp.go``: a host is the first component when it contains a ``.`` or a ``:``, is
``localhost``, or is a bracketed IPv6 address; otherwise the reference is on Docker Hub, where a
single-component name gets ``library/`` (``nginx`` -> ``docker.io/library/nginx``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import ReferenceError_

__all__ = [
    "DOCKER_HUB",
    "Reference",
    "is_digest",
    "managed_repository",
    "parse_reference",
    "registry_hosts",
]

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
# ASCII: Go's \w (distribution's grammar) is [0-9A-Za-z_], Python's would admit any letter.
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_NAME_MAX = 255


def is_digest(value: str | None) -> bool:
    """True for a well-formed ``sha256:<64 hex>`` (the only algorithm registries use)."""
    return bool(value) and _SHA256.fullmatch(value or "") is not None


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference. ``registry`` is the host (``docker.io`` by default)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _split_host(name: str) -> tuple[str | None, str]:
    first, sep, rest = name.partition("/")
    if sep and (("." in first) or (":" in first) or first == "localhost" or first.startswith("[")):
        return first, rest
    return None, name


def parse_reference(text: str, *, default_registry: str = DOCKER_HUB) -> Reference:
    """Parse ``text`` or raise :class:`ReferenceError_` naming what is wrong.

    ``default_registry`` applies when the reference names no host; ``library/`` is added only
    on Docker Hub.
    """
    if not isinstance(text, str) or not text:
        raise ReferenceError_("empty image reference", reference=text)
    if text != text.strip() or any(c.isspace() for c in text):
        raise ReferenceError_("image reference contains white space", reference=text)
    remainder, digest = text, None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise ReferenceError_(f"invalid digest {digest!r}", reference=text)
        if digest.startswith("sha256:") and not _SHA256.fullmatch(digest):
            raise ReferenceError_(f"invalid sha256 digest {digest!r}", reference=text)
    host, path = _split_host(remainder)
    tag = None
    # A tag follows the last ':' that comes after the last '/' (a host port is before it).
    colon = path.rfind(":")
    if colon != -1:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ReferenceError_(f"invalid tag {tag!r}", reference=text)
    if host is not None and not _HOST.fullmatch(host):
        raise ReferenceError_(f"invalid registry host {host!r}", reference=text)
    if not path:
        raise ReferenceError_("image reference has no repository", reference=text)
    for component in path.split("/"):
        if not _COMPONENT.fullmatch(component):
            if component.lower() != component:
                raise ReferenceError_(
                    f"repository name must be lowercase: {component!r}", reference=text
                )
            raise ReferenceError_(f"invalid repository component {component!r}", reference=text)
    registry = host or default_registry
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if len(f"{host + '/' if host else ''}{path}") > _NAME_MAX:
        raise ReferenceError_(f"repository name longer than {_NAME_MAX} characters", reference=text)
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _normalize_host(host: str) -> str:
    host = host.strip().lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def registry_hosts(url: str | None, extra: Iterable[str] = ()) -> frozenset[str]:
    """The hosts a registry is known by: the host of ``url`` plus ``extra`` (``registry.hosts``).

    A URL on its scheme's default port also answers to ``host:443`` / ``host:80`` written out,
    since image references may spell the port and still mean the same registry.
    """
    hosts = {_normalize_host(h) for h in extra if h.strip()}
    if url:
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.hostname:
            name = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            default = _DEFAULT_PORTS.get(parts.scheme, "443")
            port = str(parts.port) if parts.port else default
            hosts.add(_normalize_host(name if port == default else f"{name}:{port}"))
            if port == default:
                hosts.add(_normalize_host(f"{name}:{port}"))
    return frozenset(hosts)


def managed_repository(ref: Reference, hosts: Collection[str]) -> str | None:
    """The repository path of ``ref`` in the managed registry, or None when it names another.

    ``hosts`` comes from :func:`registry_hosts`. Empty ``hosts`` means no registry is
    configured: every reference then counts as ours, because keeping too much is the safe
    error for a tool that deletes.
    """
    if not hosts:
        return ref.repository
    host = _normalize_host(ref.registry)
    return ref.repository if any(_normalize_host(h) == host for h in hosts) else None
