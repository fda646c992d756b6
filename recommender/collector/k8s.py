"""``kubectl get pods -A -o json`` (a ``List`` or ``PodList``) -> a running-references snapshot.

What runs is a hard veto on deletion, so every image a pod names is recorded:

* ``status.containerStatuses``, ``initContainerStatuses`` and ``ephemeralContainerStatuses``
  report ``imageID``: ``host/repo@sha256:...`` (containerd, cri-o) or
  ``docker-pullable://host/repo@sha256:...`` (dockershim). ``docker://sha256:...`` or a bare
  ``sha256:...`` is a local image id, not a registry digest, and is ignored.
* For a multi-arch image the runtime may report the platform digest while the spec names the
  index digest: when they differ both are recorded, so either matches.
* A container without a status yet (pending) or without a registry digest falls back to the
  ``spec`` image (tag, maybe digest).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import PayloadError, ReferenceError_
from ..reference import Reference, is_digest, parse_reference
from .events import PodSnapshot, RunningRef
from .payload import get_dict, get_list, get_str, join, require_dict

__all__ = ["parse_pod_list"]

_KINDS = {"List", "PodList"}
# (spec list, status list, container_kind)
_SECTIONS = (
    ("containers", "containerStatuses", "container"),
    ("initContainers", "initContainerStatuses", "init"),
    ("ephemeralContainers", "ephemeralContainerStatuses", "ephemeral"),
)
_ID_PREFIXES = ("docker-pullable://", "containerd://", "cri-o://")


def parse_pod_list(doc: Any, *, source: str, taken_at: datetime) -> PodSnapshot:
    """A snapshot of what runs in ``source`` (a cluster name) at ``taken_at``."""
    if not source or len(source) > 128:
        raise PayloadError("source must be a cluster name of 1 to 128 characters",
                           where="source")
    if taken_at.tzinfo is None:
        raise PayloadError("taken_at must be timezone-aware", where="taken_at")
    root = require_dict(doc, "")
    kind = get_str(root, "kind", "", required=True)
    if kind not in _KINDS:
        raise PayloadError(f"kind: expected List or PodList, got {kind!r}", where="kind")
    items = get_list(root, "items", "", required=True)
    assert items is not None
    refs: list[RunningRef] = []
    for i, item in enumerate(items):
        refs.extend(_pod_refs(item, f"items[{i}]"))
    return PodSnapshot(source=source, taken_at=taken_at, pods=len(items), refs=refs)


def _pod_refs(item: Any, where: str) -> list[RunningRef]:
    pod = require_dict(item, where)
    meta = get_dict(pod, "metadata", where, required=True)
    assert meta is not None
    name = get_str(meta, "name", join(where, "metadata"), required=True, max_len=255)
    namespace = get_str(meta, "namespace", join(where, "metadata"), max_len=128)
    spec = get_dict(pod, "spec", where) or {}
    status = get_dict(pod, "status", where) or {}
    refs: list[RunningRef] = []
    seen: set[tuple[str, str | None, str | None, str | None]] = set()
    for spec_key, status_key, kind in _SECTIONS:
        specs = _by_name(spec, spec_key, join(where, "spec"))
        statuses = _by_name(status, status_key, join(where, "status"))
        for cname in list(specs) + [n for n in statuses if n not in specs]:
            for ref, image in _container_refs(specs.get(cname), statuses.get(cname)):
                key = (cname, ref.repository, ref.digest, ref.tag)
                if key in seen:
                    continue
                seen.add(key)
                refs.append(RunningRef(
                    registry=ref.registry, repository=ref.repository, image=image,
                    digest=ref.digest, tag=ref.tag, namespace=namespace, pod=name,
                    container=cname, container_kind=kind,
                ))
    return refs


def _by_name(doc: dict[str, Any], key: str, where: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Containers (or statuses) of one section by name, each with its ``where``."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for j, entry in enumerate(get_list(doc, key, where) or []):
        w = join(join(where, key), j)
        entry = require_dict(entry, w)
        cname = get_str(entry, "name", w, required=True, max_len=255)
        assert cname is not None
        out[cname] = (w, entry)
    return out


def _parse_image(image: str, where: str) -> Reference:
    try:
        ref = parse_reference(image)
    except ReferenceError_ as exc:
        raise PayloadError(f"{where}: {exc.message}", where=where, image=image) from None
    if ref.digest is not None and not is_digest(ref.digest):
        raise PayloadError(f"{where}: only sha256 digests are supported", where=where)
    if ref.tag is None and ref.digest is None:
        ref = Reference(ref.registry, ref.repository, "latest")  # what the runtime pulls
    return ref


def _container_refs(
    spec: tuple[str, dict[str, Any]] | None, status: tuple[str, dict[str, Any]] | None,
) -> list[tuple[Reference, str]]:
    out: list[tuple[Reference, str]] = []
    spec_ref: Reference | None = None
    spec_image: str | None = None
    if spec is not None:
        w, entry = spec
        spec_image = get_str(entry, "image", w, required=True, max_len=1024)
        assert spec_image is not None
        spec_ref = _parse_image(spec_image, join(w, "image"))
    if status is not None:
        w, entry = status
        image_id = get_str(entry, "imageID", w, max_len=1024)
        status_image = get_str(entry, "image", w, max_len=1024)
        id_ref = _registry_digest(image_id, join(w, "imageID"))
        if id_ref is not None:
            tag = _tag_for(id_ref, spec_ref, status_image)
            out.append((Reference(id_ref.registry, id_ref.repository, tag, id_ref.digest),
                        image_id or ""))
            if spec_ref is not None and spec_ref.digest and spec_ref.digest != id_ref.digest:
                # Index digest in the spec, platform digest from the runtime: keep both.
                out.append((spec_ref, spec_image or ""))
            return out
        if spec_ref is None and status_image and not status_image.startswith("sha256:"):
            spec_ref = _parse_image(status_image, join(w, "image"))
            return [(spec_ref, status_image)]
    if spec_ref is not None:
        out.append((spec_ref, spec_image or ""))
    return out


def _registry_digest(image_id: str | None, where: str) -> Reference | None:
    """The registry reference in an ``imageID``, or None for a local image id."""
    if not image_id:
        return None
    for prefix in _ID_PREFIXES:
        if image_id.startswith(prefix):
            image_id = image_id[len(prefix):]
            break
    if image_id.startswith(("docker://", "sha256:")) or "@" not in image_id:
        return None  # a local image id (docker://sha256:..., sha256:...), not a digest
    ref = _parse_image(image_id, where)
    return ref if ref.digest else None


def _tag_for(id_ref: Reference, spec_ref: Reference | None, status_image: str | None
             ) -> str | None:
    if spec_ref is not None and spec_ref.repository == id_ref.repository and spec_ref.tag:
        return spec_ref.tag
    if status_image and not status_image.startswith("sha256:"):
        try:
            ref = parse_reference(status_image)
        except ReferenceError_:
            return None
        if ref.repository == id_ref.repository:
            return ref.tag
    return None
