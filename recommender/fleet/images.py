"""Real bytes for a fleet's manifests, to push them to a real registry (demo, tests).

Only a fleet generated with a ``byte_scale`` can be materialized: its layer digests are the
sha256 of real, deterministic gzip'd tars (``content.layer_bytes``), every other digest is
always that of real bytes. :func:`materialize` rebuilds the bytes from an ``inventory.jsonl``
record and checks every digest, so what it returns is exactly what the registry will compute.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ConfigError, DigestMismatch
from ..timeutil import parse_time
from . import content

__all__ = ["Materialized", "materialize", "push_records"]


@dataclass(frozen=True)
class Materialized:
    """One manifest ready to push: blobs first (digest -> bytes), then the manifest."""

    repository: str
    digest: str
    media_type: str
    manifest: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)  # push these manifests first


def _seconds_ns(text: str) -> int:
    return int(parse_time(text).timestamp()) * 1_000_000_000


def _check(what: str, expected: str, data: bytes) -> None:
    got = content.sha256(data)
    if got != expected:
        raise DigestMismatch(f"{what}: rebuilt bytes hash to {got}, the record says {expected}",
                             expected=expected, actual=got)


def materialize(record: dict[str, Any], *, byte_scale: float | None) -> Materialized:
    """The bytes of one ``inventory.jsonl`` record of a fleet generated with ``byte_scale``."""
    kind = record.get("kind", "image")
    repo, digest = record["repository"], record["digest"]
    if kind == "index":
        body = content.index_bytes(record["flavor"], [
            (c["digest"], c["size"], c["media_type"], c["platform"])
            for c in record["children"]])
        _check(f"{repo}@{digest}", digest, body)
        return Materialized(repo, digest, record["media_type"], body, {},
                            [c["digest"] for c in record["children"]])
    if kind == "signature":
        host, _, name = record["identity"].partition("/")
        attestation = record.get("referrer_kind") == "attestation"
        payload = (content.attestation_payload if attestation else content.signature_payload)(
            host, name, record["subject"])
        cfg = content.signature_config_bytes(_seconds_ns(record["created_at"]), payload)
        if attestation:
            body = content.attestation_manifest_bytes(payload, (content.sha256(cfg), len(cfg)))
        else:
            body = content.signature_manifest_bytes(payload, (content.sha256(cfg), len(cfg)),
                                                    record["subject"])
        _check(f"{repo}@{digest}", digest, body)
        return Materialized(repo, digest, record["media_type"], body,
                            {content.sha256(cfg): cfg, content.sha256(payload): payload})
    if byte_scale is None:
        raise ConfigError("layers of a fleet generated without byte_scale are virtual and "
                          "cannot be pushed: regenerate it with --byte-scale", digest=digest)
    blobs: dict[str, bytes] = {}
    diff_ids, layers = [], []
    for b in record["blobs"][1:]:
        key = b["content"]
        zipped, tar_bytes = content.layer_bytes(key, int(key.rsplit(":", 1)[1]), byte_scale)
        if content.sha256(zipped) != b["digest"]:
            raise DigestMismatch(
                f"layer {key} does not match at byte_scale={byte_scale}: was the fleet "
                "generated with another byte_scale (see fleet.json)?",
                expected=b["digest"], actual=content.sha256(zipped))
        blobs[b["digest"]] = zipped
        diff_ids.append(content.sha256(tar_bytes))
        layers.append((b["digest"], len(zipped)))
    cfg = content.config_bytes(created_ns=_seconds_ns(record["created_at"]),
                               platform=record["platform"] or "linux/amd64", diff_ids=diff_ids,
                               repository=repo, labels=record.get("labels") or {})
    _check(f"config of {repo}@{digest}", record["blobs"][0]["digest"], cfg)
    blobs[record["blobs"][0]["digest"]] = cfg
    body = content.manifest_bytes(record["flavor"], (content.sha256(cfg), len(cfg)), layers)
    _check(f"{repo}@{digest}", digest, body)
    return Materialized(repo, digest, record["media_type"], body, blobs)


class _Pusher(Protocol):
    def push_blob(self, repo: str, data: bytes, *, mount_from: str | None = None) -> str: ...

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str: ...


def push_records(client: _Pusher, records: Iterable[dict[str, Any]], *,
                 byte_scale: float | None) -> int:
    """Push the alive manifests of ``records`` with their tags (the demo's registry).

    Platform manifests go before their index; signatures after their subject. Every digest
    the registry answers with is checked against the record. Returns manifests pushed.
    """
    alive = [r for r in records if r.get("deleted_at") is None]
    rank = {"image": 0, "index": 1, "signature": 2}
    pushed = 0
    for rec in sorted(alive, key=lambda r: rank.get(r.get("kind", "image"), 0)):
        item = materialize(rec, byte_scale=byte_scale)
        for data in item.blobs.values():
            client.push_blob(item.repository, data)
        for ref in [item.digest, *rec.get("tags", ())]:
            got = client.put_manifest(item.repository, ref, item.manifest, item.media_type)
            if got != item.digest:
                raise DigestMismatch(f"{item.repository}:{ref}: the registry computed {got}",
                                     expected=item.digest, actual=got)
        pushed += 1
    return pushed
