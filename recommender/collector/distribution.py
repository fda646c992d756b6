"""CNCF Distribution (Docker Registry 2.x/3.x, GitLab) notification envelopes -> events.

An envelope is ``{"events": [...]}``; its events are unrelated to each other. The registry
retries deliveries, so the same ``id`` can come twice: the writer de-duplicates on it.
Traps handled here (see docs/telemetry.md):

* ``timestamp`` has nanoseconds and any offset; it is normalised to UTC.
* Blob requests fire events too; their layer/config media type makes them ``blob`` usage.
* A manifest ``DELETE`` fires one event with ``{digest, repository}`` and then one per tag with
  ``{tag, repository}`` only; 3.x also sends ``{repository}`` alone when a whole repository
  is deleted. So a delete may carry a digest, a tag, or neither.
* ``size`` may be missing while the older ``length`` is present.
"""

from __future__ import annotations

from typing import Any

from ..errors import PayloadError
from ..usage import Classifier
from .events import Event
from .payload import (
    get_dict,
    get_digest,
    get_int,
    get_list,
    get_str,
    get_time,
    join,
    require_dict,
)

__all__ = ["ACTIONS", "parse_envelope", "parse_event"]

SOURCE = "distribution"
ACTIONS = frozenset({"push", "pull", "mount", "delete"})


def parse_envelope(doc: Any, classifier: Classifier) -> list[Event]:
    """All events of one envelope, or :class:`PayloadError` for the first bad one.

    All or nothing: a request with one malformed event stores none of them.
    """
    envelope = require_dict(doc, "")
    items = get_list(envelope, "events", "", required=True)
    assert items is not None
    return [parse_event(item, classifier, f"events[{i}]") for i, item in enumerate(items)]


def parse_event(item: Any, classifier: Classifier, where: str = "event") -> Event:
    ev = require_dict(item, where)
    event_id = get_str(ev, "id", where, required=True, max_len=128)
    time = get_time(ev, "timestamp", where)
    action = get_str(ev, "action", where, required=True)
    if action not in ACTIONS:
        path = join(where, "action")
        raise PayloadError(
            f"{path}: unknown action {action!r} (expected one of {', '.join(sorted(ACTIONS))})",
            where=path,
        )
    target_where = join(where, "target")
    target = get_dict(ev, "target", where, required=True)
    assert target is not None
    repository = get_str(target, "repository", target_where, required=True, max_len=255)
    digest = get_digest(target, "digest", target_where)
    tag = get_str(target, "tag", target_where, max_len=128)
    media_type = get_str(target, "mediaType", target_where, max_len=128)
    size = get_int(target, "size", target_where)
    if size is None:
        size = get_int(target, "length", target_where)
    url = get_str(target, "url", target_where, max_len=2048)
    if digest is None and action != "delete":
        path = join(target_where, "digest")
        raise PayloadError(f"{path} is required for a {action} event", where=path)

    request = get_dict(ev, "request", where) or {}
    request_where = join(where, "request")
    method = get_str(request, "method", request_where, max_len=8)
    user_agent = get_str(request, "useragent", request_where)
    client_addr = get_str(request, "addr", request_where, max_len=64)
    host = get_str(request, "host", request_where, max_len=255)
    actor_doc = get_dict(ev, "actor", where) or {}
    actor = get_str(actor_doc, "name", join(where, "actor"), max_len=255)
    source_doc = get_dict(ev, "source", where) or {}
    registry = host or get_str(source_doc, "addr", join(where, "source"), max_len=255)

    usage = classifier.classify(
        user_agent=user_agent, actor=actor, method=method, media_type=media_type, url=url,
    )
    return Event(
        time=time,
        source=SOURCE,
        source_event_id=event_id or "",
        action=action,
        usage=usage,
        repository=repository or "",
        registry=registry,
        digest=digest,
        tag=tag,
        media_type=media_type,
        size=size,
        method=method.upper() if method else None,
        user_agent=user_agent,
        actor=actor,
        client_addr=client_addr,
    )
