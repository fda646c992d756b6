"""Harbor webhooks (Default payload and CloudEvents) -> events.

Default: ``{"type": "PULL_ARTIFACT", "occur_at": <unix s>, "operator": "...",
"event_data": {"resources": [{"digest", "tag", "resource_url"}], "repository": {...}}}``.
CloudEvents (Harbor >= 2.8): ``{"specversion": "1.0", "id", "type": "harbor.artifact.pulled",
"time", "operator", "data": {...same as event_data...}}``.

Traps handled here: on a pull by digest Harbor puts the digest in ``tag``; Harbor sends no
event id in the Default format, so the id is a hash of the content (a retried delivery hashes
the same); Harbor sends no user agent, so only the operator (robot scanner accounts) can
classify a pull. Other Harbor event types (scans, quota, replication, retention) carry no
usage and are accepted with no events; an unknown type is an error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import PayloadError
from ..usage import Classifier
from .events import Event
from .payload import (
    content_id,
    get_dict,
    get_digest,
    get_list,
    get_str,
    get_time,
    join,
    require_dict,
)

__all__ = ["parse_webhook"]

SOURCE = "harbor"
_ACTIONS = {
    "PUSH_ARTIFACT": "push", "harbor.artifact.pushed": "push",
    "PULL_ARTIFACT": "pull", "harbor.artifact.pulled": "pull",
    "DELETE_ARTIFACT": "delete", "harbor.artifact.deleted": "delete",
}
# Known types without usage information: accepted, nothing stored.
_IGNORED = {
    "SCANNING_COMPLETED", "SCANNING_FAILED", "SCANNING_STOPPED", "QUOTA_EXCEED",
    "QUOTA_WARNING", "REPLICATION", "TAG_RETENTION", "UPLOAD_CHART", "DOWNLOAD_CHART",
    "DELETE_CHART",
    "harbor.scan.completed", "harbor.scan.failed", "harbor.scan.stopped",
    "harbor.quota.exceed", "harbor.quota.warning", "harbor.replication.status.changed",
    "harbor.tag_retention.finished",
}


def parse_webhook(doc: Any, classifier: Classifier, *, latest: datetime | None = None
                  ) -> list[Event]:
    """The events of one webhook delivery (one per resource), or :class:`PayloadError`
    (also for a time before the registry era or after ``latest``)."""
    hook = require_dict(doc, "")
    kind = get_str(hook, "type", "", required=True)
    cloud = "specversion" in hook
    if kind in _IGNORED:
        return []
    action = _ACTIONS.get(kind or "")
    if action is None:
        raise PayloadError(f"type: unknown Harbor event type {kind!r}", where="type")
    data_key = "data" if cloud else "event_data"
    if cloud:
        time = get_time(hook, "time", "", latest)
        hook_id = get_str(hook, "id", "", required=True, max_len=100)
    else:
        time = get_time(hook, "occur_at", "", latest)
        hook_id = None
    operator = get_str(hook, "operator", "", max_len=255)
    data = get_dict(hook, data_key, "", required=True)
    assert data is not None
    repo_doc = get_dict(data, "repository", data_key, required=True)
    assert repo_doc is not None
    repo_where = join(data_key, "repository")
    repository = get_str(repo_doc, "repo_full_name", repo_where, max_len=255)
    if repository is None:
        namespace = get_str(repo_doc, "namespace", repo_where, required=True)
        name = get_str(repo_doc, "name", repo_where, required=True)
        repository = f"{namespace}/{name}"
    resources = get_list(data, "resources", data_key, required=True)
    assert resources is not None
    usage = classifier.classify(user_agent=None, actor=operator, method="GET")
    events = []
    for i, item in enumerate(resources):
        where = join(join(data_key, "resources"), i)
        res = require_dict(item, where)
        tag = get_str(res, "tag", where, max_len=128)
        digest = get_digest(res, "digest", where)
        if tag and tag.startswith("sha256:"):
            # Pull by digest: Harbor reports the digest as the tag.
            if digest is None:
                digest = get_digest(res, "tag", where)
            tag = None
        if digest is None:
            path = join(where, "digest")
            raise PayloadError(f"{path} is required", where=path)
        resource_url = get_str(res, "resource_url", where, max_len=2048)
        registry = resource_url.split("/", 1)[0] if resource_url and "/" in resource_url else None
        event_id = f"{hook_id}#{i}" if hook_id else content_id([kind, hook.get("occur_at"),
                                                              operator, repository, res])
        events.append(Event(
            time=time, source=SOURCE, source_event_id=event_id, action=action, usage=usage,
            repository=repository, registry=registry, digest=digest, tag=tag,
            actor=operator, method="GET" if action == "pull" else None,
        ))
    return events
