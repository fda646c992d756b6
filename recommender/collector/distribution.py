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

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from ..errors import PayloadError
from ..reference import is_digest
from ..timeutil import EARLIEST_EVENT
from ..usage import Classifier
from .events import Event
from .files import decode
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

__all__ = ["ACTIONS", "parse_envelope", "parse_envelope_line", "parse_event"]

SOURCE = "distribution"
ACTIONS = frozenset({"push", "pull", "mount", "delete"})


_INT_MAX = 2**63 - 1  # BIGINT, as payload.get_int


def parse_envelope(doc: Any, classifier: Classifier, *, latest: datetime | None = None
                   ) -> list[Event]:
    """All events of one envelope, or :class:`PayloadError` for the first bad one.

    All or nothing: a request with one malformed event stores none of them. An event time
    before the registry era or after ``latest`` is an error (``payload.check_time``).
    """
    if type(doc) is dict and type(items := doc.get("events")) is list:
        events = []
        for i, item in enumerate(items):
            event = _parse_usual(item, classifier, latest)
            # Anything unusual goes through the checked parser: same result, or its error.
            events.append(event if event is not None
                          else parse_event(item, classifier, f"events[{i}]", latest=latest))
        return events
    envelope = require_dict(doc, "")
    items = get_list(envelope, "events", "", required=True)
    assert items is not None
    return [parse_event(item, classifier, f"events[{i}]", latest=latest)
            for i, item in enumerate(items)]


def _parse_usual(ev: Any, classifier: Classifier, latest: datetime | None = None
                 ) -> Event | None:
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
    target = get("target")
    if type(target) is not dict:
        return None
    tget = target.get
    request = get("request")
    if request is None:
        method = user_agent = client_addr = host = None
    elif type(request) is dict:
        rget = request.get
        method, user_agent = rget("method"), rget("useragent")
        client_addr, host = rget("addr"), rget("host")
    else:
        return None
    actor = _member(get("actor"), "name")
    source_addr = _member(get("source"), "addr")
    if actor is _WRONG or source_addr is _WRONG:
        return None
    return _usual(classifier, latest, get("id"), get("timestamp"), get("action"),
                  tget("repository"), tget("digest"), tget("tag"), tget("mediaType"),
                  tget("size"), tget("length"), tget("url"), method, user_agent, client_addr,
                  host, actor, source_addr)


_WRONG = object()


def _member(doc: Any, key: str) -> Any:
    """``doc[key]`` of an object (None when missing), None without one, ``_WRONG`` for a
    value that is not an object."""
    if doc is None:
        return None
    return doc.get(key) if type(doc) is dict else _WRONG


def _usual(classifier: Classifier, latest: datetime | None, event_id: Any, stamp: Any,
           action: Any, repository: Any, digest: Any, tag: Any, media_type: Any, size: Any,
           length: Any, url: Any, method: Any, user_agent: Any, client_addr: Any, host: Any,
           actor: Any, source_addr: Any) -> Event | None:
    """The checks of :func:`_parse_usual` on an event's fields, however they were decoded."""
    if not (type(event_id) is str and 0 < len(event_id) <= 128
            and type(stamp) is str and len(stamp) == 30 and stamp[29] == "Z"
            and stamp[19] == "." and stamp[4] == stamp[7] == "-" and stamp[5] != "W"
            and stamp[13] == stamp[16] == ":" and type(action) is str and action in ACTIONS):
        return None
    try:  # nanoseconds: Python keeps microseconds (as payload.get_time)
        time = datetime.fromisoformat(stamp[:26] + "+00:00")
    except ValueError:
        return None
    if not (time >= EARLIEST_EVENT and (latest is None or time <= latest)):
        return None  # the checked parser words the error
    if not (type(repository) is str and 0 < len(repository) <= 255
            and (type(digest) is str and 0 < len(digest) <= 512 and is_digest(digest)
                 or digest is None and action == "delete")
            and (tag is None or type(tag) is str and 0 < len(tag) <= 128)
            and (media_type is None or type(media_type) is str and 0 < len(media_type) <= 128)
            and (url is None or type(url) is str and 0 < len(url) <= 2048)):
        return None
    if size is None:
        size = length
    if not (size is None or type(size) is int and 0 <= size <= _INT_MAX):
        return None
    if not ((method is None or type(method) is str and 0 < len(method) <= 8)
            and (user_agent is None or type(user_agent) is str and 0 < len(user_agent) <= 512)
            and (client_addr is None or type(client_addr) is str and 0 < len(client_addr) <= 64)
            and (host is None or type(host) is str and 0 < len(host) <= 255)
            and (actor is None or type(actor) is str and 0 < len(actor) <= 255)):
        return None
    registry = host
    if registry is None:  # as parse_event: the source is read only without a host
        registry = source_addr
        if not (registry is None or type(registry) is str and 0 < len(registry) <= 255):
            return None
    usage = classifier.classify(
        user_agent=user_agent, actor=actor, method=method, media_type=media_type, url=url,
    )
    # YYYY-MM-DD?HH:MM:SS.ffffff (the checks above, and a valid time): SQLite's form of it.
    return Event(time, SOURCE, event_id, action, usage, repository, registry, digest, tag,
                 media_type, size, method.upper() if method else None, user_agent, actor,
                 client_addr, stamp=f"{stamp[:10]} {stamp[11:26]}")


# --- JSON lines: decoded straight into the fields the fast path reads ------------------------
# A file of envelopes is decoded by msgspec into these structs instead of into dicts: it skips
# the keys nobody reads and builds no dict, about twice as fast as orjson's dicts read by
# _parse_usual. Anything they do not fit (a wrong type, a float size, bad JSON) goes the dict
# way, so the result is parse_envelope's on orjson's decoding, or its error.


class _Target(msgspec.Struct):
    repository: Any = None
    digest: Any = None
    tag: Any = None
    mediaType: Any = None  # noqa: N815 - the JSON's key
    size: int | None = None
    length: int | None = None
    url: Any = None


class _Request(msgspec.Struct):
    method: Any = None
    useragent: Any = None
    addr: Any = None
    host: Any = None


class _Actor(msgspec.Struct):
    name: Any = None


class _Source(msgspec.Struct):
    addr: Any = None


class _Event(msgspec.Struct):
    id: Any = None
    timestamp: Any = None
    action: Any = None
    target: _Target | None = None
    request: _Request | None = None
    actor: _Actor | None = None
    source: _Source | None = None


class _Envelope(msgspec.Struct):
    events: list[_Event]


_DECODER = msgspec.json.Decoder(_Envelope)


def parse_envelope_line(line: bytes, classifier: Classifier,
                        decode: Callable[[bytes], Any] = decode, *,
                        latest: datetime | None = None) -> list[Event]:
    """``parse_envelope(decode(line))``: the same events or the same error, faster for
    envelopes of the usual shape. ``decode`` is orjson's, raising :class:`PayloadError` for
    invalid JSON (a file's line; the HTTP endpoint words it its own way)."""
    try:
        envelope = _DECODER.decode(line)
    # Invalid UTF-8 is a ValueError. msgspec decodes nested values by recursion, so deep
    # nesting (a thousand levels) exhausts Python's stack: orjson below then refuses it with
    # its own depth limit, as the other endpoints do.
    except (msgspec.DecodeError, ValueError, RecursionError):
        envelope = None
    if envelope is not None:
        events = []
        for ev in envelope.events:
            t, r = ev.target, ev.request
            if t is None:
                break
            if r is None:
                method = user_agent = client_addr = host = None
            else:
                method, user_agent, client_addr, host = r.method, r.useragent, r.addr, r.host
            event = _usual(
                classifier, latest, ev.id, ev.timestamp, ev.action, t.repository, t.digest, t.tag,
                t.mediaType, t.size, t.length, t.url, method, user_agent, client_addr, host,
                None if ev.actor is None else ev.actor.name,
                None if ev.source is None else ev.source.addr)
            if event is None:
                break
            events.append(event)
        else:
            return events
    return parse_envelope(decode(line), classifier, latest=latest)


def parse_event(item: Any, classifier: Classifier, where: str = "event", *,
                latest: datetime | None = None) -> Event:
    """One event, every field checked; :class:`PayloadError` names the first bad one."""
    ev = require_dict(item, where)
    event_id = get_str(ev, "id", where, required=True, max_len=128)
    time = get_time(ev, "timestamp", where, latest)
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
