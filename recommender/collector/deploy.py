"""Deploy events (tagwarden's own webhook, posted by CI/CD or Argo CD) -> events.

``{"timestamp": RFC 3339, "image": "host/repo:tag@sha256:...", "environment": "production",
"cluster": "eu-1", "namespace": "shop"}``; ``timestamp`` and ``image`` are required. The image
may carry a tag, a digest or both (neither means ``latest``); a tag-only deploy gets its
digest from the tag history when it is written. Deploy systems send no id, so the id is a
hash of the content: the same deploy posted twice is stored once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import PayloadError, ReferenceError_
from ..reference import is_digest, parse_reference
from .events import Event
from .payload import content_id, get_str, get_time, join, require_dict

__all__ = ["parse_deploy", "parse_deploys"]

SOURCE = "deploy"


def parse_deploys(doc: Any, *, latest: datetime | None = None) -> list[Event]:
    """One deploy object or an array of them, or :class:`PayloadError` for the first bad one
    (also for a time before the registry era or after ``latest``)."""
    if isinstance(doc, list):
        if not doc:
            raise PayloadError("no deploy events in the array")
        return [parse_deploy(item, f"[{i}]", latest=latest) for i, item in enumerate(doc)]
    return [parse_deploy(doc, "", latest=latest)]


def parse_deploy(item: Any, where: str = "", *, latest: datetime | None = None) -> Event:
    obj = require_dict(item, where)
    time = get_time(obj, "timestamp", where, latest)
    image = get_str(obj, "image", where, required=True, max_len=1024)
    assert image is not None
    try:
        ref = parse_reference(image)
    except ReferenceError_ as exc:
        path = join(where, "image")
        raise PayloadError(f"{path}: {exc.message}", where=path, image=image) from None
    if ref.digest is not None and not is_digest(ref.digest):
        path = join(where, "image")
        raise PayloadError(f"{path}: only sha256 digests are supported", where=path)
    # No tag and no digest: the runtime pulls ``latest``, so that is what was deployed.
    tag = ref.tag if (ref.tag or ref.digest) else "latest"
    environment = get_str(obj, "environment", where, max_len=128)
    cluster = get_str(obj, "cluster", where, max_len=128)
    namespace = get_str(obj, "namespace", where, max_len=128)
    event_id = content_id({"timestamp": time.isoformat(), "image": image,
                           "environment": environment, "cluster": cluster,
                           "namespace": namespace})
    return Event(
        time=time, source=SOURCE, source_event_id=event_id, action="deploy", usage="use",
        repository=ref.repository, registry=ref.registry, digest=ref.digest, tag=tag,
        environment=environment, cluster=cluster, namespace=namespace,
    )
