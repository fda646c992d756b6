"""Content addressing: blobs, image configs and manifests built exactly as registries see them.

Every digest in a fleet is the sha256 of bytes these functions produce, so the same functions
serve the generator and :func:`recommender.fleet.images.materialize`. Layers are the one
exception to "real bytes always": with ``byte_scale=None`` a layer's digest is the sha256 of
its content key (the nominal size is kept), because hashing hundreds of megabytes per layer
would make a fleet of 100,000 manifests impossible to generate. With a ``byte_scale`` every
layer is a real, deterministic gzip'd tar of ``max(512, size * byte_scale)`` bytes of
pseudo-random data and the descriptor carries that real size.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
from datetime import UTC, datetime

import orjson

__all__ = [
    "MEDIA",
    "attestation_manifest_bytes",
    "attestation_payload",
    "config_bytes",
    "index_bytes",
    "layer_bytes",
    "layer_digests",
    "manifest_bytes",
    "sha256",
    "signature_config_bytes",
    "signature_manifest_bytes",
    "signature_payload",
]

MEDIA = {
    "oci": {
        "manifest": "application/vnd.oci.image.manifest.v1+json",
        "index": "application/vnd.oci.image.index.v1+json",
        "config": "application/vnd.oci.image.config.v1+json",
        "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
    },
    "docker": {
        "manifest": "application/vnd.docker.distribution.manifest.v2+json",
        "index": "application/vnd.docker.distribution.manifest.list.v2+json",
        "config": "application/vnd.docker.container.image.v1+json",
        "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    },
}
COSIGN_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v0.2"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def layer_bytes(key: str, size: int, byte_scale: float) -> tuple[bytes, bytes]:
    """A real layer for ``key``: (gzip'd tar, the uncompressed tar). Deterministic.

    The file inside holds pseudo-random bytes (SHAKE-256 of the key), so gzip cannot shrink it
    and the blob keeps roughly the scaled size. tar and gzip headers carry no time stamps.
    """
    n = max(512, round(size * byte_scale))
    payload = hashlib.shake_256(key.encode()).digest(n)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("layer/" + hashlib.sha256(key.encode()).hexdigest()[:16] + ".bin")
        info.size = n
        info.mtime = 0
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(payload))
    tar_bytes = raw.getvalue()
    zipped = gzip.compress(tar_bytes, compresslevel=1, mtime=0)
    return zipped, tar_bytes


def layer_digests(key: str, size: int, byte_scale: float | None) -> tuple[str, int, str]:
    """(digest, descriptor size, diff_id) of the layer with content ``key``."""
    if byte_scale is None:
        return (sha256(b"tagwarden-fleet-layer\0" + key.encode()), size,
                sha256(b"tagwarden-fleet-diff\0" + key.encode()))
    zipped, tar_bytes = layer_bytes(key, size, byte_scale)
    return sha256(zipped), len(zipped), sha256(tar_bytes)


def config_bytes(*, created_ns: int, platform: str, diff_ids: list[str], repository: str,
                 labels: dict[str, str]) -> bytes:
    """An OCI/Docker image config (the ``created`` field is what inventories call created_at)."""
    os_name, arch = platform.split("/", 1)
    doc = {
        "architecture": arch,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/app/" + repository.rsplit("/", 1)[-1]],
            "Labels": labels,
        },
        "created": _iso(created_ns),
        "history": [{"created": _iso(created_ns), "created_by": "COPY . /app # buildkit"}],
        "os": os_name,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return orjson.dumps(doc)


def _indent3(doc: object) -> bytes:
    """JSON as Go's ``json.MarshalIndent(v, "", "   ")`` writes it (docker's manifests)."""
    lines = orjson.dumps(doc, option=orjson.OPT_INDENT_2).split(b"\n")
    out = []
    for line in lines:
        stripped = line.lstrip(b" ")
        out.append(b" " * ((len(line) - len(stripped)) // 2 * 3) + stripped)
    return b"\n".join(out)


def _descriptor(media_type: str, digest: str, size: int) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def manifest_bytes(flavor: str, config: tuple[str, int], layers: list[tuple[str, int]],
                   annotations: dict[str, str] | None = None) -> bytes:
    """An image manifest. Docker v2 as the docker CLI writes it (3-space indent), OCI compact."""
    media = MEDIA[flavor]
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": media["manifest"],
        "config": _descriptor(media["config"], *config),
        "layers": [_descriptor(media["layer"], d, s) for d, s in layers],
    }
    if annotations and flavor == "oci":
        doc["annotations"] = annotations
    if flavor == "docker":
        return _indent3(doc)
    return orjson.dumps(doc)


def index_bytes(flavor: str, children: list[tuple[str, int, str, str]]) -> bytes:
    """An image index / manifest list; children are (digest, size, media type, platform)."""
    manifests = []
    for digest, size, media_type, platform in children:
        os_name, arch = platform.split("/", 1)
        manifests.append({"mediaType": media_type, "digest": digest, "size": size,
                          "platform": {"architecture": arch, "os": os_name}})
    doc = {"schemaVersion": 2, "mediaType": MEDIA[flavor]["index"], "manifests": manifests}
    if flavor == "docker":
        return _indent3(doc)
    return orjson.dumps(doc)


def signature_payload(host: str, repository: str, subject: str) -> bytes:
    """cosign's simple-signing payload: what the signature covers."""
    doc = {
        "critical": {
            "identity": {"docker-reference": f"{host}/{repository}"},
            "image": {"docker-manifest-digest": subject},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    return orjson.dumps(doc)


def signature_manifest_bytes(payload: bytes, config: tuple[str, int], key: str) -> bytes:
    """The OCI manifest cosign pushes as ``sha256-<hex>.sig`` (signature in an annotation)."""
    sig = base64.b64encode(hashlib.shake_256(b"sig\0" + key.encode()).digest(71)).decode()
    doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA["oci"]["manifest"],
        "config": _descriptor(MEDIA["oci"]["config"], *config),
        "layers": [{**_descriptor(COSIGN_PAYLOAD, sha256(payload), len(payload)),
                    "annotations": {"dev.cosignproject.cosign/signature": sig}}],
    }
    return orjson.dumps(doc)


def attestation_payload(host: str, repository: str, subject: str) -> bytes:
    """A DSSE envelope around an in-toto SLSA provenance statement, as ``cosign attest`` pushes."""
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": SLSA_PROVENANCE,
        "subject": [{"name": f"{host}/{repository}",
                     "digest": {"sha256": subject.split(":", 1)[1]}}],
        "predicate": {"builder": {"id": "https://git.example.internal/ci"},
                      "buildType": "https://git.example.internal/ci/pipeline@v1"},
    }
    sig = base64.b64encode(hashlib.shake_256(b"att\0" + subject.encode()).digest(71)).decode()
    envelope = {"payloadType": "application/vnd.in-toto+json",
                "payload": base64.b64encode(orjson.dumps(statement)).decode(),
                "signatures": [{"keyid": "", "sig": sig}]}
    return orjson.dumps(envelope)


def attestation_manifest_bytes(payload: bytes, config: tuple[str, int]) -> bytes:
    """The OCI manifest cosign pushes as ``sha256-<hex>.att``."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA["oci"]["manifest"],
        "config": _descriptor(MEDIA["oci"]["config"], *config),
        "layers": [{**_descriptor(DSSE_ENVELOPE, sha256(payload), len(payload)),
                    "annotations": {"dev.cosignproject.cosign/signature": "",
                                    "predicateType": SLSA_PROVENANCE}}],
    }
    return orjson.dumps(doc)


def signature_config_bytes(created_ns: int, payload: bytes) -> bytes:
    """The config cosign writes next to a signature (go-containerregistry's empty image)."""
    doc = {"architecture": "", "created": _iso(created_ns),
           "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
           "rootfs": {"type": "layers", "diff_ids": [sha256(payload)]}, "config": {}}
    return orjson.dumps(doc)
