"""Usage classification: was a registry request *use* of an image, or something else?

Only use keeps an image alive. A pull by a vulnerability scanner, a replication job, a cleanup
tool or tagwarden itself says nothing about whether anybody still runs the image, so those pulls
are stored under their own class and the model ignores them. An unknown client counts as
``use``: wrongly calling a real pull "not use" could get a live image deleted, the other mistake
only delays a deletion.

Order of the checks (first match wins):

1. the request failed (non-2xx) -> ``failed``;
2. the target is a blob (layer/config media type, or a ``/blobs/`` URL) -> ``blob``;
3. ``usage.use_agents`` from the configuration -> ``use`` (an escape hatch);
4. tagwarden's own user agent -> ``self``;
5. actor patterns (tagwarden's own accounts or roles, ``usage.self_actors``; Harbor robot
   scanner accounts, AWS service roles, configured actors) -> their class;
6. configured agent patterns, then the built-in non-use agents (scanner, replication,
   janitor) -> their class. Built-in patterns are anchored on the product token at the
   start of the user agent, so a docker client whose user agent mentions another product
   further on (``UpstreamClient(...)``) is not misread;
7. anything else -> ``use`` (docker, containerd/kubelet, cri-o, podman, buildah, buildkit,
   kaniko, nerdctl, cosign, and every client we do not know). ``HEAD`` is use like ``GET``:
   containerd resolves a tag with ``HEAD`` and then fetches by digest.

Decisions worth knowing:

* ``skopeo`` is ``replication``. Its user agent is ``skopeo/<version>``; it is used to copy
  and sync images between registries (``skopeo copy``, ``skopeo sync``) and to inspect them,
  never to run them. Podman and buildah, which share its library, identify as
  ``containers/<version> (github.com/containers/image)`` or ``Buildah/...`` and are use.
* ``crane`` is ``janitor`` (with regclient's ``regctl``/``regbot``): they list, retag and delete.
  ``regsync`` and ``harbor-registry-client`` (Harbor replication) are ``replication``.
* Harbor's ``harbor-jobservice`` actor runs tag retention and GC: ``janitor``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "BLOB",
    "FAILED",
    "JANITOR",
    "MANIFEST_MEDIA_TYPES",
    "REPLICATION",
    "SCANNER",
    "SELF",
    "USE",
    "Classifier",
    "is_manifest_media_type",
]

USE, SCANNER, REPLICATION, JANITOR, SELF, BLOB, FAILED = (
    "use", "scanner", "replication", "janitor", "self", "blob", "failed",
)

MANIFEST_MEDIA_TYPES = frozenset({
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.artifact.manifest.v1+json",
})
# Vendors' own manifest types still say "manifest" or "index" as a media-type word.
_MANIFEST_WORD = re.compile(r"[./](?:manifest|index)[./+]", re.IGNORECASE)

# Built-in user-agent patterns, matched with ``re.match`` (anchored at the start).
_SELF_AGENTS = (r"tagwarden/",)
_SCANNER_AGENTS = (
    r"trivy",                      # trivy/0.48.1, Trivy-Harbor adapter
    r"aquasecurity",
    r"clair",                      # clair/v4 (quay), clairctl
    r"grype", r"syft", r"anchore",  # grype/0.74.0 and Anchore Engine/Enterprise
    r"snyk",                       # snyk-container, snyk/1.x
    r"twistlock", r"prisma",       # Prisma Cloud Compute (Twistlock) Defender
    r"docker-scout",
    r"jfrog[- ]xray",
    r"neuvector", r"qualys", r"sysdig", r"stackrox", r"harbor-scanner",
    r"inspector2?\.amazonaws\.com",  # Amazon Inspector scanning ECR (CloudTrail userAgent)
    # Deliberately specific: a too-broad pattern would call a real client's pull "not use".
)
_REPLICATION_AGENTS = (
    r"skopeo/",                    # decision: copy/sync/inspect tool, see module docstring
    r"regclient/regsync", r"regsync",
    r"harbor-registry-client",     # Harbor's replication adapter
    r"dragonfly", r"kraken", r"spegel",  # P2P distribution mirrors
    r"registry-mirror", r"docker-distribution-proxy",
)
_JANITOR_AGENTS = (
    r"regclient/(?:regctl|regbot)", r"regctl", r"regbot", r"regclient",
    r"crane/", r"gcrane/",
    r"reg/",                       # genuinetools/reg
    r"docker-registry-cleaner", r"registry-cleaner",
)
_SCANNER_ACTORS = (
    # Harbor's scanner robots: robot$<project>+<scanner>-Trivy-<uuid> (and Clair, ...).
    r"robot\$.*(?:trivy|clair|scanner|anchore|grype|snyk|twistlock|prisma|neuvector|aqua)",
    # Amazon Inspector's enhanced ECR scanning: its service-linked role, or the service
    # itself in a CloudTrail record's userIdentity.invokedBy.
    r"/AWSServiceRoleForAmazonInspector2?(?:/|$)", r"^inspector2?\.amazonaws\.com$",
)
_REPLICATION_ACTORS = (
    r"robot\$.*(?:replication|replicator|mirror|sync)",
    r"/AWSServiceRoleForECRReplication(?:/|$)",  # ECR's cross-region/-account replication
)
_JANITOR_ACTORS = (r"harbor-jobservice",)


def is_manifest_media_type(media_type: str | None) -> bool:
    if not media_type:
        return False
    media_type = media_type.split(";", 1)[0].strip()
    return media_type in MANIFEST_MEDIA_TYPES or _MANIFEST_WORD.search(media_type) is not None


def _compile(patterns: Iterable[str], setting: str) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise ConfigError(
                f"setting {setting}: invalid regular expression {pattern!r}: {exc}",
                setting=setting, pattern=pattern,
            ) from None
    return compiled


class Classifier:
    """Classifies one request into a usage class (a member of ``USAGE_CLASSES``).

    Extra patterns come from the configuration (``usage.*``) and are searched anywhere in the
    string; the built-in ones match at its start. Results are cached per (user agent, actor)
    and media type (bounded): a busy registry has few distinct clients and media types.
    """

    _CACHE_MAX = 4096

    def __init__(
        self,
        *,
        use_agents: Iterable[str] = (),
        scanner_agents: Iterable[str] = (),
        replication_agents: Iterable[str] = (),
        janitor_agents: Iterable[str] = (),
        scanner_actors: Iterable[str] = (),
        replication_actors: Iterable[str] = (),
        self_actors: Iterable[str] = (),
    ) -> None:
        self._use = _compile(use_agents, "usage.use_agents")
        self._self = _compile(_SELF_AGENTS, "built-in")
        self._actors = [
            (SELF, _compile(self_actors, "usage.self_actors")),
            (SCANNER, _compile(scanner_actors, "usage.scanner_actors") + _compile(
                _SCANNER_ACTORS, "built-in")),
            (REPLICATION, _compile(replication_actors, "usage.replication_actors")
             + _compile(_REPLICATION_ACTORS, "built-in")),
            (JANITOR, _compile(_JANITOR_ACTORS, "built-in")),
        ]
        self._configured = [
            (SCANNER, _compile(scanner_agents, "usage.scanner_agents")),
            (REPLICATION, _compile(replication_agents, "usage.replication_agents")),
            (JANITOR, _compile(janitor_agents, "usage.janitor_agents")),
        ]
        self._builtin = [
            (SCANNER, _compile(_SCANNER_AGENTS, "built-in")),
            (REPLICATION, _compile(_REPLICATION_AGENTS, "built-in")),
            (JANITOR, _compile(_JANITOR_AGENTS, "built-in")),
        ]
        self._cache: dict[tuple[str, str], str] = {}
        self._media_types: dict[str, bool] = {}

    @classmethod
    def from_config(cls, config: Config) -> Classifier:
        return cls(
            use_agents=config["usage.use_agents"],
            scanner_agents=config["usage.scanner_agents"],
            replication_agents=config["usage.replication_agents"],
            janitor_agents=config["usage.janitor_agents"],
            scanner_actors=config["usage.scanner_actors"],
            replication_actors=config["usage.replication_actors"],
            self_actors=config["usage.self_actors"],
        )

    def classify(
        self,
        *,
        user_agent: str | None,
        actor: str | None,
        method: str | None = None,
        media_type: str | None = None,
        status_ok: bool = True,
        url: str | None = None,
    ) -> str:
        """The usage class of one request. ``method`` does not change the class: a ``HEAD``
        is a pull like a ``GET`` (containerd resolves tags with it)."""
        if not status_ok:
            return FAILED
        if media_type:
            manifest = self._media_types.get(media_type)
            if manifest is None:  # a registry sends a handful of media types: cache them
                manifest = is_manifest_media_type(media_type)
                if len(self._media_types) >= self._CACHE_MAX:
                    self._media_types.clear()
                self._media_types[media_type] = manifest
            if not manifest:
                return BLOB
        elif url and "/blobs/" in url:
            return BLOB
        key = (user_agent or "", actor or "")
        cls = self._cache.get(key)
        if cls is None:
            cls = self._client_class(*key)
            if len(self._cache) >= self._CACHE_MAX:
                self._cache.clear()  # a flood of distinct agents must not grow memory
            self._cache[key] = cls
        return cls

    def _client_class(self, agent: str, actor: str) -> str:
        agent = agent.strip()
        if agent and any(p.search(agent) for p in self._use):
            return USE
        if agent and any(p.match(agent) for p in self._self):
            return SELF
        if actor:
            for cls, patterns in self._actors:
                if any(p.search(actor) for p in patterns):
                    return cls
        if agent:
            for cls, patterns in self._configured:
                if any(p.search(agent) for p in patterns):
                    return cls
            for cls, patterns in self._builtin:
                if any(p.match(agent) for p in patterns):
                    return cls
        return USE
