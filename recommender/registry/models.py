"""What registries hold, as tagwarden sees it whatever the backend: manifests, referrers,
digests, and the cosign tag convention."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from . import mediatypes as mt

__all__ = ["COSIGN_SUFFIXES", "Manifest", "Referrer", "artifact_kind", "digest_of",
           "referrer_kind"]

COSIGN_SUFFIXES = {".sig": "signature", ".att": "attestation", ".sbom": "sbom"}

def digest_of(body: bytes, algorithm: str = "sha256") -> str:
    if algorithm == "sha256":  # hashlib.new looks the name up on each call
        return "sha256:" + hashlib.sha256(body).hexdigest()
    return f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"



@dataclass(frozen=True)
class Manifest:
    """A manifest as served: its verified digest, media type, exact bytes and decoded JSON."""

    digest: str
    media_type: str
    body: bytes
    parsed: dict[str, Any] = field(repr=False)

    @property
    def is_index(self) -> bool:
        return mt.is_index(self.media_type)

    @property
    def children(self) -> list[dict[str, Any]]:
        """An index's ``manifests`` descriptors (empty for an image manifest)."""
        if not self.is_index:
            return []
        return [d for d in self.parsed.get("manifests") or []
                if isinstance(d, dict) and isinstance(d.get("digest"), str)]

    @property
    def config(self) -> dict[str, Any] | None:
        config = self.parsed.get("config")
        return config if isinstance(config, dict) else None

    @property
    def layers(self) -> list[dict[str, Any]]:
        return [d for d in self.parsed.get("layers") or [] if isinstance(d, dict)]

    @property
    def blobs(self) -> list[dict[str, Any]]:
        """Config and layer descriptors: the blobs this manifest keeps alive."""
        return ([self.config] if self.config else []) + self.layers

    @property
    def subject(self) -> str | None:
        subject = self.parsed.get("subject")
        return subject.get("digest") if isinstance(subject, dict) else None

    @property
    def artifact_type(self) -> str | None:
        value = self.parsed.get("artifactType")
        if value is None and self.config and self.config.get("mediaType") not in (
            mt.OCI_CONFIG, mt.DOCKER_CONFIG, None
        ):
            value = self.config.get("mediaType")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Referrer:
    """A manifest that refers to another: OCI ``subject`` or a cosign ``sha256-<hex>.*`` tag."""

    digest: str
    kind: str  # signature | attestation | sbom | other
    media_type: str | None = None
    artifact_type: str | None = None
    tag: str | None = None


def artifact_kind(artifact_type: str | None) -> str:
    """signature, sbom, attestation or other, from an artifact or media type."""
    text = (artifact_type or "").lower()
    if "signature" in text or "cosign" in text or "notary" in text:
        return "signature"
    if "sbom" in text or "spdx" in text or "cyclonedx" in text:
        return "sbom"
    if "in-toto" in text or "attestation" in text or "provenance" in text:
        return "attestation"
    return "other"


def referrer_kind(tag: str) -> tuple[str, str] | None:
    """``sha256-<hex>.sig`` → ("sha256:<hex>", "signature"); None for other tags."""
    for suffix, kind in COSIGN_SUFFIXES.items():
        if tag.startswith("sha256-") and tag.endswith(suffix):
            hexpart = tag[len("sha256-"):-len(suffix)]
            if len(hexpart) == 64:
                return f"sha256:{hexpart}", kind
    return None
