"""OCI and Docker media types, the manifest ``Accept`` list, and what each type is.

Registries answer a manifest request with whatever type the client accepts; with a partial
list one tag can yield different digests (a manifest list for one client, a converted schema 2
manifest for another: distribution#1755). Every digest lookup therefore sends the full list.
"""

from __future__ import annotations

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LAYER_FOREIGN",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_SCHEMA1",
    "DOCKER_SCHEMA1_SIGNED",
    "MANIFEST_ACCEPT",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_MANIFEST",
    "is_config",
    "is_index",
    "is_layer",
    "is_manifest",
    "normalize",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# Indexes first so a multi-platform tag resolves to the index (the digest a deploy names),
# schema 1 last: it is only ever wanted when nothing else exists.
MANIFEST_ACCEPT: tuple[str, ...] = (
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
)

_INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
_CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})


def normalize(media_type: str | None) -> str:
    """The bare type: parameters (``; charset=utf-8``) dropped, lower case."""
    if not media_type:
        return ""
    return media_type.split(";", 1)[0].strip().lower()


def is_index(media_type: str | None) -> bool:
    """An OCI image index or a Docker manifest list (children are manifests)."""
    return normalize(media_type) in _INDEXES


def is_manifest(media_type: str | None) -> bool:
    """A single-platform image manifest (OCI, Docker schema 2 or schema 1)."""
    return normalize(media_type) in _MANIFESTS


def is_config(media_type: str | None) -> bool:
    """An image configuration blob (not an artifact's own config type)."""
    return normalize(media_type) in _CONFIGS


def is_layer(media_type: str | None) -> bool:
    """A filesystem layer (OCI or Docker, any compression) or an artifact's payload.

    Anything that is neither a manifest, an index nor an image config counts as layer-like:
    artifact payloads (signatures, SBOMs) are blobs that occupy storage the same way.
    """
    mt = normalize(media_type)
    return bool(mt) and mt not in _INDEXES and mt not in _MANIFESTS and mt not in _CONFIGS
