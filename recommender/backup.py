"""Backups before deletion: a manifest, its children and blobs as an OCI image layout, or
copied into another registry (:func:`copy_manifest`, which also copies them back).

One layout directory per deleted manifest, ``<root>/<repository with / as _>@<hex>``, holding
``oci-layout``, ``index.json`` (one entry per tag the manifest had, with the standard
``org.opencontainers.image.ref.name`` annotation, and the repository in
``io.tagwarden.repository``) and ``blobs/sha256/...``. Any OCI tool (skopeo ``oci:DIR``) reads
it; :func:`restore` pushes it back into a :class:`~recommender.registry.WritableRegistry`.

Reading (the backup itself) works on any registry backend; pushing (:func:`restore`, the copy
into a backup registry) needs a writable one, which only the Distribution backend is today.

A layout is written to a temporary sibling and renamed, so a half-written backup never looks
complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import DigestMismatch, TagwardenError
from .registry import Manifest, Registry, WritableRegistry, digest_of
from .registry import mediatypes as mt

__all__ = [
    "REF_NAME",
    "REPOSITORY",
    "Restored",
    "backup_manifest",
    "copy_manifest",
    "layout_dirs",
    "restore",
]

REF_NAME = "org.opencontainers.image.ref.name"
REPOSITORY = "io.tagwarden.repository"
_LAYOUT = {"imageLayoutVersion": "1.0.0"}


def _blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, hexpart = digest.partition(":")
    return layout / "blobs" / algorithm / hexpart


def _write_blob(layout: Path, digest: str, data: bytes) -> None:
    if digest_of(data, digest.split(":", 1)[0]) != digest:
        raise DigestMismatch(f"backup of {digest}: content does not match", expected=digest)
    path = _blob_path(layout, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _save_manifest(client: Registry, repo: str, ref: str, layout: Path) -> dict[str, Any]:
    """Save one manifest (and, recursively, its children and blobs); return its descriptor."""
    manifest = client.get_manifest(repo, ref)
    _write_blob(layout, manifest.digest, manifest.body)
    doc = manifest.parsed
    if mt.is_index(manifest.media_type):
        for child in doc.get("manifests") or []:
            _save_manifest(client, repo, child["digest"], layout)
    else:
        for desc in [doc.get("config") or {}, *(doc.get("layers") or [])]:
            digest = desc.get("digest")
            if digest and not _blob_path(layout, digest).exists():
                _write_blob(layout, digest, client.get_blob(repo, digest))
    return {"mediaType": manifest.media_type, "digest": manifest.digest,
            "size": len(manifest.body)}


def layout_name(repository: str, digest: str) -> str:
    return f"{repository.replace('/', '_')}@{digest.split(':', 1)[-1]}"


def backup_manifest(client: Registry, repository: str, digest: str, tags: Any,
                    root: Path, *, now: datetime) -> Path:
    """Back up ``repository@digest`` (with its ``tags``) under ``root``; returns the layout."""
    final = root / layout_name(repository, digest)
    if (final / "index.json").exists():
        return final  # an earlier attempt finished the backup
    tmp = root / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        desc = _save_manifest(client, repository, digest, tmp)
        entries = [{**desc, "annotations": {REF_NAME: tag}} for tag in tags] or [desc]
        index = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": entries,
            "annotations": {REPOSITORY: repository,
                            "io.tagwarden.backed-up-at": now.astimezone(UTC).isoformat()},
        }
        (tmp / "oci-layout").write_text(json.dumps(_LAYOUT), encoding="utf-8")
        (tmp / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@dataclass(frozen=True)
class Restored:
    repository: str
    digest: str
    tags: tuple[str, ...]
    layout: Path


def layout_dirs(path: Path) -> list[Path]:
    """``path`` itself when it is a layout, else the layouts directly inside it."""
    if (path / "oci-layout").exists():
        return [path]
    if not path.is_dir():
        raise TagwardenError(f"no backup at {path}", path=str(path))
    found = sorted(p for p in path.iterdir() if (p / "oci-layout").exists())
    if not found:
        raise TagwardenError(f"{path} holds no OCI image layout", path=str(path))
    return found


def _read_blob(layout: Path, digest: str) -> bytes:
    path = _blob_path(layout, digest)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TagwardenError(f"backup {layout} lacks blob {digest}", path=str(layout),
                             digest=digest) from None
    if digest_of(data, digest.split(":", 1)[0]) != digest:
        raise DigestMismatch(f"backup {layout}: blob {digest} is corrupt", expected=digest)
    return data


def _push_manifest(client: WritableRegistry, repo: str, layout: Path, desc: dict[str, Any],
                   ref: str) -> str:
    body = _read_blob(layout, desc["digest"])
    doc = json.loads(body)
    media_type = desc.get("mediaType") or doc.get("mediaType") or mt.OCI_MANIFEST
    if mt.is_index(media_type):
        for child in doc.get("manifests") or []:
            _push_manifest(client, repo, layout, child, child["digest"])
    else:
        for blob in [doc.get("config") or {}, *(doc.get("layers") or [])]:
            if blob.get("digest"):
                client.push_blob(repo, _read_blob(layout, blob["digest"]))
    return client.put_manifest(repo, ref, body, media_type)


def restore(client: WritableRegistry, path: Path, *,
            repository: str | None = None) -> list[Restored]:
    """Push every layout under ``path`` back: blobs, children, then the manifest at each tag."""
    done: list[Restored] = []
    for layout in layout_dirs(path):
        try:
            index = json.loads((layout / "index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TagwardenError(f"backup {layout}: unreadable index.json: {exc}",
                                 path=str(layout)) from None
        repo = repository or (index.get("annotations") or {}).get(REPOSITORY)
        if not repo:
            raise TagwardenError(f"backup {layout} does not name its repository "
                                 "(pass --repository)", path=str(layout))
        by_digest: dict[str, list[str]] = {}
        descs: dict[str, dict[str, Any]] = {}
        for entry in index.get("manifests") or []:
            descs[entry["digest"]] = entry
            tag = (entry.get("annotations") or {}).get(REF_NAME)
            by_digest.setdefault(entry["digest"], [])
            if tag:
                by_digest[entry["digest"]].append(tag)
        for digest, tags in by_digest.items():
            for ref in tags or [digest]:
                pushed = _push_manifest(client, repo, layout, descs[digest], ref)
                if pushed != digest:
                    raise DigestMismatch(f"restored {repo}:{ref} as {pushed}, not {digest}",
                                         expected=digest, actual=pushed)
            done.append(Restored(repo, digest, tuple(tags), layout))
    return done


def _copy(src: Registry, dst: WritableRegistry, repo: str, ref: str) -> Manifest:
    manifest = src.get_manifest(repo, ref)
    if mt.is_index(manifest.media_type):
        for child in manifest.parsed.get("manifests") or []:
            copied = _copy(src, dst, repo, child["digest"])
            dst.put_manifest(repo, copied.digest, copied.body, copied.media_type)
    else:
        for desc in [manifest.parsed.get("config") or {}, *(manifest.parsed.get("layers") or [])]:
            digest = desc.get("digest")
            # push_blob asks first, so blobs the destination already holds are not sent again.
            if digest and dst.blob_size(repo, digest) is None:
                dst.push_blob(repo, src.get_blob(repo, digest))
    return manifest


def copy_manifest(src: Registry, dst: WritableRegistry, repository: str, digest: str,
                  tags: Any) -> str:
    """Copy ``repository@digest`` (children and blobs first) from ``src`` to ``dst``, at each
    of ``tags`` (by digest when there are none). Used both to back up and to restore."""
    manifest = _copy(src, dst, repository, digest)
    for ref in list(tags) or [digest]:
        pushed = dst.put_manifest(repository, ref, manifest.body, manifest.media_type)
        if pushed != digest:
            raise DigestMismatch(f"copied {repository}:{ref} as {pushed}, not {digest}",
                                 expected=digest, actual=pushed)
    return digest
