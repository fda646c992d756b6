"""Amazon ECR telemetry: CloudTrail records and ECR's EventBridge events -> events.

ECR sends no pull notifications; its API calls are recorded by CloudTrail. A document is one
of:

* a trail's log file, ``{"Records": [...]}``: a trail records every service, so records of
  other event sources are skipped;
* one CloudTrail record (``eventSource``), as a line of a file or posted alone;
* an EventBridge event (``detail-type``): "AWS API Call via CloudTrail" and "AWS Service Event
  via CloudTrail" carry a CloudTrail record as ``detail``; "ECR Image Action" is ECR's own
  push and delete event; other ``aws.ecr`` events (scans, replication, ...) carry no usage;
* an array of any of these.

A single record or event from another source is refused: a rule or a file sending them is
misconfigured. Of ECR's records, ``BatchGetImage`` is a pull (one per id asked for),
``PutImage`` a push, ``BatchDeleteImage`` and the lifecycle policy's ``PolicyExecutionEvent``
deletes; the rest (``GetDownloadUrlForLayer``, ``GetAuthorizationToken``, the describe
calls, ...) carry no usage and are skipped.

Traps handled here (see docs/telemetry.md):

* a pull names a tag or a digest: a tag-only pull gets its digest from the tag history when
  it is written, or counts against the tag alone;
* a failed call (``errorCode``) is no pull (a ``failed`` pull) and no push or delete (skipped:
  it changed nothing);
* a ``BatchDeleteImage`` by tag removes that tag only (ECR deletes the image with its last
  tag, which the next scan sees); by digest it removes the image with all its tags;
* AWS services call ECR too: ``sourceIPAddress`` is then a service name, not a client;
* the same record comes from a trail file and from EventBridge: both use its ``eventID``, so
  it is stored once.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from functools import lru_cache
from typing import Any

from ..errors import PayloadError
from ..timeutil import EARLIEST_EVENT
from ..usage import FAILED, JANITOR, Classifier
from .events import Event
from .payload import (
    check_time,
    get_dict,
    get_digest,
    get_list,
    get_str,
    get_time,
    join,
    require_dict,
)

__all__ = ["EVENT_SOURCE", "SOURCE", "parse_cloudtrail"]

SOURCE = "cloudtrail"  # events.source of every event parsed here
EVENT_SOURCE = "ecr.amazonaws.com"
_EVENTBRIDGE_SOURCE = "aws.ecr"
_VIA_CLOUDTRAIL = frozenset({"AWS API Call via CloudTrail", "AWS Service Event via CloudTrail"})
_IMAGE_ACTION = "ECR Image Action"
_MAX_AGENT = 512  # events.user_agent
_MAX_ACTOR = 255  # events.actor
_MAX_ID = 120  # events.source_event_id is 128, with room for "#<index>"


def parse_cloudtrail(doc: Any, classifier: Classifier, *, latest: datetime | None = None
                     ) -> list[Event]:
    """The events of one document (see the module's docstring), or :class:`PayloadError`
    naming the first bad field: all or nothing. A time before the registry era or after
    ``latest`` is an error too."""
    if isinstance(doc, list):
        if not doc:
            raise PayloadError("no CloudTrail records or events in the array")
        events: list[Event] = []
        for i, item in enumerate(doc):
            events += _parse_one(item, classifier, f"[{i}]", latest)
        return events
    return _parse_one(doc, classifier, "", latest)


def _parse_one(item: Any, classifier: Classifier, where: str, latest: datetime | None
               ) -> list[Event]:
    obj = require_dict(item, where)
    if "Records" in obj:
        records = get_list(obj, "Records", where, required=True)
        assert records is not None
        events: list[Event] = []
        for i, record in enumerate(records):
            at = join(join(where, "Records"), i)
            # A trail holds every service's records: only ECR's concern us.
            if require_dict(record, at).get("eventSource") != EVENT_SOURCE:
                continue
            events += parse_record(record, classifier, at, latest=latest)
        return events
    if "detail-type" in obj:
        return _parse_eventbridge(obj, classifier, where, latest)
    if "eventSource" in obj:
        return parse_record(obj, classifier, where, latest=latest)
    raise PayloadError(f"{where or 'document'}: neither a CloudTrail record (eventSource), a "
                       "trail's log file (Records) nor an EventBridge event (detail-type)",
                       where=where or None)


def _parse_eventbridge(obj: dict[str, Any], classifier: Classifier, where: str,
                       latest: datetime | None) -> list[Event]:
    kind = get_str(obj, "detail-type", where, required=True)
    source = get_str(obj, "source", where, required=True)
    if source != _EVENTBRIDGE_SOURCE:
        path = join(where, "source")
        raise PayloadError(f"{path}: {source!r} is not ECR's event source "
                           f"{_EVENTBRIDGE_SOURCE!r}", where=path)
    detail = get_dict(obj, "detail", where, required=True)
    assert detail is not None
    if kind in _VIA_CLOUDTRAIL:
        return parse_record(detail, classifier, join(where, "detail"), latest=latest)
    if kind == _IMAGE_ACTION:
        return _image_action(obj, detail, where, latest)
    return []  # scans, replication, pull through cache, ...: no usage


def _image_action(obj: dict[str, Any], detail: dict[str, Any], where: str,
                  latest: datetime | None) -> list[Event]:
    """ECR's own "ECR Image Action": a PUSH or DELETE that succeeded keeps the tag history
    current between scans."""
    at = join(where, "detail")
    event_id = get_str(obj, "id", where, required=True, max_len=_MAX_ID)
    time = get_time(obj, "time", where, latest)
    action_type = get_str(detail, "action-type", at, required=True)
    result = get_str(detail, "result", at)
    repository = get_str(detail, "repository-name", at, required=True, max_len=255)
    digest = get_digest(detail, "image-digest", at)
    tag = get_str(detail, "image-tag", at, max_len=128)
    registry = _registry(get_str(obj, "account", where, max_len=12),
                         get_str(obj, "region", where, max_len=32))
    if action_type not in ("PUSH", "DELETE"):
        path = join(at, "action-type")
        raise PayloadError(f"{path}: unknown action {action_type!r} (expected PUSH or DELETE)",
                           where=path)
    if result is not None and result != "SUCCESS":
        return []  # a failed push or delete changed nothing
    if action_type == "PUSH":
        if digest is None:
            path = join(at, "image-digest")
            raise PayloadError(f"{path} is required for a PUSH", where=path)
        action = "push"
    else:
        if digest is None and tag is None:
            path = join(at, "image-digest")
            raise PayloadError(f"{path} or image-tag is required for a DELETE", where=path)
        action = "delete"
        if tag is not None:
            digest = None  # removing a tag removes the image only with its last tag
    assert repository is not None and event_id is not None
    return [Event(time=time, source=SOURCE, source_event_id=event_id, action=action,
                  usage="use", repository=repository, registry=registry, digest=digest,
                  tag=tag)]


def parse_record(record: Any, classifier: Classifier, where: str = "", *,
                 latest: datetime | None = None) -> list[Event]:
    """The events of one CloudTrail record of ECR (none for calls without usage)."""
    rec = require_dict(record, where)
    source = get_str(rec, "eventSource", where, required=True)
    if source != EVENT_SOURCE:
        path = join(where, "eventSource")
        raise PayloadError(f"{path}: {source!r} is not ECR ({EVENT_SOURCE!r})", where=path)
    name = get_str(rec, "eventName", where, required=True, max_len=128)
    parse = _BY_NAME.get(name or "")
    if parse is None:
        return []
    event_id = get_str(rec, "eventID", where, required=True, max_len=_MAX_ID)
    time = _event_time(rec, where, latest)
    assert event_id is not None
    return parse(_Record(rec, where, event_id, time, classifier))


class _Record:
    """What every record kind reads alike: id, time, registry, the caller."""

    def __init__(self, rec: dict[str, Any], where: str, event_id: str, time: datetime,
                 classifier: Classifier) -> None:
        self.rec, self.where, self.event_id, self.time = rec, where, event_id, time
        self.params_where = join(where, "requestParameters")
        self.params = get_dict(rec, "requestParameters", where) or {}
        self.response = get_dict(rec, "responseElements", where) or {}
        self.failed = get_str(rec, "errorCode", where) is not None
        identity = get_dict(rec, "userIdentity", where) or {}
        id_where = join(where, "userIdentity")
        # A role's session, a user; an AWS service has no ARN but says which service it is.
        actor = (get_str(identity, "arn", id_where, max_len=2048)
                 or get_str(identity, "invokedBy", id_where, max_len=2048))
        self.actor = actor[:_MAX_ACTOR] if actor else None
        agent = get_str(rec, "userAgent", where, max_len=8192)
        self.user_agent = agent[:_MAX_AGENT] if agent else None
        self.client_addr = _client_addr(get_str(rec, "sourceIPAddress", where, max_len=2048))
        account = (get_str(self.params, "registryId", self.params_where, max_len=12)
                   or get_str(rec, "recipientAccountId", where, max_len=12))
        self.registry = _registry(account, get_str(rec, "awsRegion", where, max_len=32))
        self.usage = classifier.classify(user_agent=self.user_agent, actor=self.actor,
                                         status_ok=not self.failed)

    def repository(self, doc: dict[str, Any] | None = None, where: str | None = None) -> str:
        value = get_str(self.params if doc is None else doc, "repositoryName",
                        self.params_where if where is None else where, required=True,
                        max_len=255)
        assert value is not None
        return value

    def event(self, i: int, action: str, repository: str, digest: str | None,
              tag: str | None, **extra: Any) -> Event:
        fields: dict[str, Any] = {
            "time": self.time, "source": SOURCE, "source_event_id": f"{self.event_id}#{i}",
            "action": action, "usage": self.usage, "repository": repository,
            "registry": self.registry, "digest": digest, "tag": tag,
            "user_agent": self.user_agent, "actor": self.actor,
            "client_addr": self.client_addr,
        }
        fields.update(extra)
        return Event(**fields)


def _image_id(doc: Any, where: str) -> tuple[str | None, str | None]:
    """(digest, tag) of an ``imageId``; at least one is required."""
    image_id = require_dict(doc, where)
    digest = get_digest(image_id, "imageDigest", where)
    tag = get_str(image_id, "imageTag", where, max_len=128)
    if digest is None and tag is None:
        path = join(where, "imageDigest")
        raise PayloadError(f"{path} or imageTag is required", where=path)
    return digest, tag


def _image_ids(doc: dict[str, Any], where: str) -> list[tuple[str | None, str | None]]:
    ids = get_list(doc, "imageIds", where, required=True)
    assert ids is not None
    if not ids:
        path = join(where, "imageIds")
        raise PayloadError(f"{path} must not be empty", where=path)
    return [_image_id(item, join(join(where, "imageIds"), i)) for i, item in enumerate(ids)]


def _failed_ids(r: _Record) -> set[tuple[str | None, str | None]]:
    """The ids ``responseElements.failures`` names: those calls failed."""
    where = join(r.where, "responseElements")
    failures = get_list(r.response, "failures", where) or []
    out = set()
    for i, item in enumerate(failures):
        at = join(join(where, "failures"), i)
        image_id = get_dict(require_dict(item, at), "imageId", at)
        if image_id is not None:
            out.add(_image_id(image_id, join(at, "imageId")))
    return out


def _batch_get_image(r: _Record) -> list[Event]:
    """One pull per id asked for; a digest the response gives (when it is recorded) wins
    over the tag history."""
    repository = r.repository()
    asked = _image_ids(r.params, r.params_where)
    failed = _failed_ids(r)
    answered: dict[str, str] = {}  # tag -> digest, from the images returned
    where = join(r.where, "responseElements")
    for i, image in enumerate(get_list(r.response, "images", where) or []):
        at = join(join(where, "images"), i)
        image_id = get_dict(require_dict(image, at), "imageId", at)
        if image_id is not None:
            digest, tag = _image_id(image_id, join(at, "imageId"))
            if digest is not None and tag is not None:
                answered[tag] = digest
    events = []
    for i, (digest, tag) in enumerate(asked):
        usage = FAILED if (digest, tag) in failed else r.usage
        if digest is None and tag is not None and usage != FAILED:
            digest = answered.get(tag)
        events.append(r.event(i, "pull", repository, digest, tag, usage=usage))
    return events


def _put_image(r: _Record) -> list[Event]:
    """A push: the digest from the response (ECR computes it) or the request."""
    if r.failed:
        return []
    repository = r.repository()
    where = join(r.where, "responseElements")
    image = get_dict(r.response, "image", where) or {}
    image_where = join(where, "image")
    image_id = get_dict(image, "imageId", image_where) or {}
    id_where = join(image_where, "imageId")
    digest = (get_digest(image_id, "imageDigest", id_where)
              or get_digest(r.params, "imageDigest", r.params_where))
    tag = (get_str(image_id, "imageTag", id_where, max_len=128)
           or get_str(r.params, "imageTag", r.params_where, max_len=128))
    media_type = (get_str(image, "imageManifestMediaType", image_where, max_len=128)
                  or get_str(r.params, "imageManifestMediaType", r.params_where, max_len=128))
    if digest is None:
        path = join(id_where, "imageDigest")
        raise PayloadError(f"{path} (or requestParameters.imageDigest) is required for "
                           "PutImage", where=path)
    return [r.event(0, "push", repository, digest, tag, media_type=media_type)]


def _batch_delete_image(r: _Record) -> list[Event]:
    """Deletes of the ids ECR reports deleted (or, without a response, those asked for and
    not failed): by digest the image with its tags, by tag that tag alone."""
    if r.failed:
        return []
    repository = r.repository()
    asked = _image_ids(r.params, r.params_where)
    failed = _failed_ids(r)
    events = []
    for i, (digest, tag) in enumerate(asked):
        if (digest, tag) in failed:
            continue
        if tag is not None:
            digest = None  # the image goes only with its last tag: the scan sees that
        events.append(r.event(i, "delete", repository, digest, tag))
    return events


def _policy_execution(r: _Record) -> list[Event]:
    """ECR's lifecycle policy expired images: each is deleted with its tags."""
    where = join(r.where, "serviceEventDetails")
    details = get_dict(r.rec, "serviceEventDetails", r.where, required=True)
    assert details is not None
    repository = r.repository(details, where)
    archiving = _archiving_rules(details, where)
    actions = get_list(details, "lifecycleEventImageActions", where, required=True)
    assert actions is not None
    events = []
    for i, item in enumerate(actions):
        at = join(join(where, "lifecycleEventImageActions"), i)
        action = require_dict(item, at)
        priority = action.get("rulePriority")
        if isinstance(priority, int) and priority in archiving:
            continue  # archived, not deleted: it can be restored
        image = get_dict(action, "lifecycleEventImage", at, required=True)
        assert image is not None
        digest = get_digest(image, "digest", join(at, "lifecycleEventImage"), required=True)
        events.append(r.event(i, "delete", repository, digest, None, usage=JANITOR))
    return events


def _archiving_rules(details: dict[str, Any], where: str) -> set[Any]:
    """Priorities of the policy's rules that archive (``transition``) instead of expiring."""
    policy = get_dict(details, "lifecycleEventPolicy", where) or {}
    rules = policy.get("lifecycleEventRules")
    if not isinstance(rules, list):
        return set()
    return {rule.get("rulePriority") for rule in rules
            if isinstance(rule, dict) and rule.get("action") == "transition"
            and isinstance(rule.get("rulePriority"), int)}


_BY_NAME = {
    "BatchGetImage": _batch_get_image,
    "PutImage": _put_image,
    "BatchDeleteImage": _batch_delete_image,
    "PolicyExecutionEvent": _policy_execution,
}


def _registry(account: str | None, region: str | None) -> str | None:
    """The registry host of an account and region (what image references name)."""
    if not account or not region:
        return None
    return f"{account}.dkr.ecr.{region}.amazonaws.com"


def _event_time(rec: dict[str, Any], where: str, latest: datetime | None) -> datetime:
    """``eventTime``, as :func:`.payload.get_time` reads it; CloudTrail's own form
    (``2026-03-01T10:00:00Z``) parsed once per distinct second."""
    value = rec.get("eventTime")
    if (type(value) is str and len(value) == 20 and value[19] == "Z" and value[10] == "T"
            and value[4] == value[7] == "-" and value[13] == value[16] == ":"):
        time = _utc_second(value)
        if time is not None:
            if time >= EARLIEST_EVENT and (latest is None or time <= latest):
                return time
            return check_time(time, join(where, "eventTime"), latest)
    return get_time(rec, "eventTime", where, latest)


@lru_cache(maxsize=4096)
def _utc_second(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value[:19] + "+00:00")
    except ValueError:
        return None  # the general parser words the error


@lru_cache(maxsize=4096)  # a trail repeats a fleet's few hundred addresses
def _client_addr(value: str | None) -> str | None:
    """The caller's address; AWS services put their own name there (``AWS Internal``,
    ``ecs-tasks.amazonaws.com``): no client then."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None
