"""Small, real, deterministic OCI images, pushed to a :class:`~.protocol.WritableRegistry`.

Tests, the demo and ``bench/scan.py`` fill registries with these. Everything derives from a
seed: the same arguments give the same bytes, hence the same digests. Layers are real
(uncompressed) tar files holding one file of pseudo-random bytes, so skopeo or a container
runtime could pull them; configs carry ``created``, labels and the layers' ``diff_ids``.
"""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from . import mediatypes as mt
from .models import digest_of
from .protocol import WritableRegistry

__all__ = [
    "COSIGN_SIGNATURE",
    "BuiltImage",
    "PushedImage",
    "build_image",
    "build_index",
    "layer_tar",
    "push_image",
    "push_referrer",
    "push_signature",
]

COSIGN_SIGNATURE = "application/vnd.dev.cosign.simplesigning.v1+json"
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def _seed_int(seed: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(seed).encode()).digest()[:8], "big")


def layer_tar(seed: object, size: int) -> bytes:
    """A tar with one file of ``size`` pseudo-random bytes; fixed metadata, so reproducible."""
    payload = random.Random(_seed_int(seed)).randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"data/{hashlib.sha256(repr(seed).encode()).hexdigest()[:16]}")
        info.size, info.mtime, info.mode = size, 0, 0o644
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _descriptor(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def _json(doc: object) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True)
class BuiltImage:
    """A manifest and the blobs it needs, ready to push."""

    manifest: bytes
    media_type: str
    blobs: tuple[tuple[str, bytes], ...]  # (media type, bytes): config first, then layers

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)


@dataclass
class PushedImage:
    """What was pushed: the manifest's digest and bytes, its blobs, its children."""

    repository: str
    tag: str | None
    digest: str
    media_type: str
    size: int
    blobs: dict[str, int] = field(default_factory=dict)  # digest -> size (config + layers)
    children: list[PushedImage] = field(default_factory=list)
    created: datetime | None = None

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


def build_image(
    *,
    seed: object,
    layers: Sequence[int | bytes] = (1024,),
    created: datetime = EPOCH,
    labels: Mapping[str, str] | None = None,
    platform: str = "linux/amd64",
    subject: tuple[str, str, int] | None = None,
    artifact_type: str | None = None,
    layer_media_type: str = mt.OCI_LAYER,
) -> BuiltImage:
    """An OCI image manifest. ``layers``: sizes (random content) or prepared tar bytes (shared).

    ``subject`` = (media type, digest, size) makes it an OCI 1.1 referrer of that manifest.
    """
    os_name, _, arch = platform.partition("/")
    tars = [
        layer if isinstance(layer, bytes) else layer_tar((seed, i), layer)
        for i, layer in enumerate(layers)
    ]
    config = _json({
        "architecture": arch or "amd64",
        "os": os_name or "linux",
        "created": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "config": {"Labels": dict(labels or {})},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(t) for t in tars]},
        "history": [{"created_by": f"tagwarden.push seed={seed!r}"}],
    })
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _descriptor(mt.OCI_CONFIG, config),
        "layers": [_descriptor(layer_media_type, t) for t in tars],
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    if subject:
        doc["subject"] = {"mediaType": subject[0], "digest": subject[1], "size": subject[2]}
    blobs = ((mt.OCI_CONFIG, config), *((layer_media_type, t) for t in tars))
    return BuiltImage(_json(doc), mt.OCI_MANIFEST, blobs)


def build_index(children: Sequence[tuple[BuiltImage, str]]) -> bytes:
    """An OCI image index over (image, "os/arch") children."""
    manifests = []
    for image, platform in children:
        os_name, _, arch = platform.partition("/")
        manifests.append(_descriptor(image.media_type, image.manifest,
                                     platform={"architecture": arch, "os": os_name}))
    return _json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests})


def _push_built(
    client: WritableRegistry, repo: str, ref: str, image: BuiltImage, mount_from: str | None
) -> PushedImage:
    sizes: dict[str, int] = {}
    for _media_type, data in image.blobs:
        sizes[client.push_blob(repo, data, mount_from=mount_from)] = len(data)
    digest = client.put_manifest(repo, ref, image.manifest, image.media_type)
    return PushedImage(repo, None if ref.startswith("sha256:") else ref, digest,
                       image.media_type, len(image.manifest), sizes)


def push_image(
    client: WritableRegistry,
    repo: str,
    tag: str | None,
    *,
    layers: Sequence[int | bytes] = (1024,),
    platforms: Sequence[str] | None = None,
    subject: PushedImage | None = None,
    seed: object = None,
    created: datetime = EPOCH,
    labels: Mapping[str, str] | None = None,
    artifact_type: str | None = None,
    mount_from: str | None = None,
) -> PushedImage:
    """Build and push an image (an index of ``platforms`` when given) at ``tag``.

    ``tag=None`` pushes by digest (untagged). ``seed`` defaults to (repo, tag): two calls with
    the same arguments push the same digest. ``subject`` makes the image a referrer.
    """
    seed = (repo, tag) if seed is None else seed
    subj = (subject.media_type, subject.digest, subject.size) if subject else None

    def build(platform: str) -> BuiltImage:
        return build_image(seed=(seed, platform) if platforms else seed, layers=layers,
                           created=created, labels=labels, platform=platform, subject=subj,
                           artifact_type=artifact_type)

    if not platforms:
        image = build("linux/amd64")
        pushed = _push_built(client, repo, tag or image.digest, image, mount_from)
        pushed.created = created
        return pushed
    children = []
    built = []
    for platform in platforms:
        image = build(platform)
        built.append((image, platform))
        child = _push_built(client, repo, image.digest, image, mount_from)
        child.created = created
        children.append(child)
    index = build_index(built)
    digest = client.put_manifest(repo, tag or digest_of(index), index, mt.OCI_INDEX)
    return PushedImage(repo, tag, digest, mt.OCI_INDEX, len(index), {}, children, created)


def push_signature(
    client: WritableRegistry, target: PushedImage, *, seed: object = None, kind: str = "sig"
) -> PushedImage:
    """A cosign-style signature (or ``att``/``sbom``) of ``target`` at ``sha256-<hex>.<kind>``."""
    tag = target.digest.replace(":", "-", 1) + f".{kind}"
    payload = _json({"critical": {"image": {"docker-manifest-digest": target.digest},
                                  "type": "cosign container image signature"},
                     "optional": {"seed": repr(seed)}})
    # What cosign itself writes: no platform, the zero time as ``created``.
    config = _json({"architecture": "", "os": "", "config": {},
                    "created": "0001-01-01T00:00:00Z",
                    "rootfs": {"type": "layers", "diff_ids": [digest_of(payload)]}})
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _descriptor(mt.OCI_CONFIG, config),
        "layers": [_descriptor(COSIGN_SIGNATURE, payload, annotations={
            "dev.cosignproject.cosign/signature": hashlib.sha256(payload).hexdigest()})],
    }
    image = BuiltImage(_json(doc), mt.OCI_MANIFEST,
                       ((mt.OCI_CONFIG, config), (COSIGN_SIGNATURE, payload)))
    return _push_built(client, target.repository, tag, image, None)


def push_referrer(
    client: WritableRegistry,
    target: PushedImage,
    *,
    artifact_type: str = "application/spdx+json",
    seed: object = None,
    size: int = 256,
) -> PushedImage:
    """An OCI 1.1 artifact whose ``subject`` is ``target``, pushed by digest.

    Registries without the referrers API (Distribution 2.x) are found through the tag schema:
    the ``sha256-<hex>`` tag holds an index listing the referrers, which we keep up to date.
    """
    empty = b"{}"
    payload = random.Random(_seed_int((target.digest, seed))).randbytes(size)
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": _descriptor(mt.OCI_EMPTY, empty),
        "layers": [_descriptor(artifact_type, payload)],
        "subject": {"mediaType": target.media_type, "digest": target.digest,
                    "size": target.size},
    }
    image = BuiltImage(_json(doc), mt.OCI_MANIFEST, ((mt.OCI_EMPTY, empty),
                                                     (artifact_type, payload)))
    pushed = _push_built(client, target.repository, image.digest, image, None)
    tag = target.digest.replace(":", "-", 1)
    existing: list[dict[str, object]] = []
    if client.head_manifest(target.repository, tag) is not None:
        existing = client.get_manifest(target.repository, tag).children
    entry = _descriptor(mt.OCI_MANIFEST, image.manifest, artifactType=artifact_type)
    if entry not in existing:
        existing.append(entry)
    index = _json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": existing})
    client.put_manifest(target.repository, tag, index, mt.OCI_INDEX)
    return pushed
