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

from datetime import datetime
from typing import Any

from ..errors import PayloadError
from ..reference import is_digest
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


_INT_MAX = 2**63 - 1  # BIGINT, as payload.get_int


def parse_envelope(doc: Any, classifier: Classifier) -> list[Event]:
    """All events of one envelope, or :class:`PayloadError` for the first bad one.

    All or nothing: a request with one malformed event stores none of them.
    """
    if type(doc) is dict and type(items := doc.get("events")) is list:
        events = []
        for i, item in enumerate(items):
            event = _parse_usual(item, classifier)
            # Anything unusual goes through the checked parser: same result, or its error.
            events.append(event if event is not None
                          else parse_event(item, classifier, f"events[{i}]"))
        return events
    envelope = require_dict(doc, "")
    items = get_list(envelope, "events", "", required=True)
    assert items is not None
    return [parse_event(item, classifier, f"events[{i}]") for i, item in enumerate(items)]


def _parse_usual(ev: Any, classifier: Classifier) -> Event | None:
    """The event :func:`parse_event` would return, for the shape registries really send;
    ``None`` for anything else (an empty string, a missing digest, an odd timestamp, any
    wrong type), which :func:`parse_event` then parses or refuses with its exact error.

    This is the collector's hot path (most of its CPU was here): plain dict lookups and type
    tests, no error paths built, no helper calls per field. ``tests/collector/
    test_parsers_fuzz.py`` checks that both parsers agree on arbitrary mutations.
    """
    if type(ev) is not dict:
        return None
    get = ev.get
    event_id = get("id")
    stamp = get("timestamp")
    action = get("action")
    target = get("target")
    if not (type(event_id) is str and 0 < len(event_id) <= 128
            and type(stamp) is str and len(stamp) == 30 and stamp[29] == "Z"
            and stamp[19] == "." and type(action) is str and action in ACTIONS
            and type(target) is dict):
        return None
    try:  # nanoseconds: Python keeps microseconds (as payload.get_time)
        time = datetime.fromisoformat(stamp[:26] + "+00:00")
    except ValueError:
        return None
    tget = target.get
    repository = tget("repository")
    digest = tget("digest")
    tag = tget("tag")
    media_type = tget("mediaType")
    size = tget("size")
    url = tget("url")
    if not (type(repository) is str and 0 < len(repository) <= 255
            and (type(digest) is str and 0 < len(digest) <= 512 and is_digest(digest)
                 or digest is None and action == "delete")
            and (tag is None or type(tag) is str and 0 < len(tag) <= 128)
            and (media_type is None or type(media_type) is str and 0 < len(media_type) <= 128)
            and (url is None or type(url) is str and 0 < len(url) <= 2048)):
        return None
    if size is None:
        size = tget("length")
    if not (size is None or type(size) is int and 0 <= size <= _INT_MAX):
        return None
    request = get("request")
    if request is None:
        method = user_agent = client_addr = host = None
    elif type(request) is dict:
        rget = request.get
        method = rget("method")
        user_agent = rget("useragent")
        client_addr = rget("addr")
        host = rget("host")
        if not ((method is None or type(method) is str and 0 < len(method) <= 8)
                and (user_agent is None or type(user_agent) is str and 0 < len(user_agent) <= 512)
                and (client_addr is None
                     or type(client_addr) is str and 0 < len(client_addr) <= 64)
                and (host is None or type(host) is str and 0 < len(host) <= 255)):
            return None
    else:
        return None
    actor_doc = get("actor")
    if actor_doc is None:
        actor = None
    elif type(actor_doc) is dict:
        actor = actor_doc.get("name")
        if not (actor is None or type(actor) is str and 0 < len(actor) <= 255):
            return None
    else:
        return None
    source_doc = get("source")
    if not (source_doc is None or type(source_doc) is dict):
        return None
    registry = host
    if registry is None and source_doc is not None:  # as parse_event: read only without host
        registry = source_doc.get("addr")
        if not (registry is None or type(registry) is str and 0 < len(registry) <= 255):
            return None
    usage = classifier.classify(
        user_agent=user_agent, actor=actor, method=method, media_type=media_type, url=url,
    )
    return Event(time, SOURCE, event_id, action, usage, repository, registry, digest, tag,
                 media_type, size, method.upper() if method else None, user_agent, actor,
                 client_addr)


def parse_event(item: Any, classifier: Classifier, where: str = "event") -> Event:
    """One event, every field checked; :class:`PayloadError` names the first bad one."""
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
