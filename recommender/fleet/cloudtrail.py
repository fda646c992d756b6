"""The fleet's Distribution history as Amazon ECR's CloudTrail would have recorded it.

ECR sends no notifications, so a demo or test on ECR replays trail records instead: a manifest
pull becomes a ``BatchGetImage`` record naming the tag when the pull named one (as a container
runtime's pull by tag does: the collector then resolves it from the tag history), else the
digest; a push of a tagged manifest a ``PutImage``; a delete a ``BatchDeleteImage`` by digest
or by tag. Blob requests, mounts and untagged pushes have no record of their own that the
collector reads, so they become none.

A record keeps the event's id (the collector's de-duplication key), its time at CloudTrail's
precision (the second), the client's address without its port, the user agent, and the actor
as the session of an IAM role named after it (node pulls, with no actor, come from the
``nodes`` role).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator
from typing import Any

from ..collector.clients import client_key
from ..timeutil import parse_time
from ..usage import is_manifest_media_type

__all__ = ["trail_record", "trail_records"]

_ROLE_CHARS = re.compile(r"[^\w+=,.@-]")  # what IAM allows in a role or session name


def trail_records(events: Iterable[dict[str, Any]], *, account: str, region: str
                  ) -> Iterator[dict[str, Any]]:
    """The records of ``events`` (Distribution notification events), in their order.

    A pull names its tag only when the tag pointed at the pulled digest at the pull's
    second (as the pushes among ``events`` place it); else it names the digest, as a client
    that resolved the tag earlier and pulls by digest does.
    """
    events = list(events)
    pointed = _TagPointer(events)
    for event in events:
        record = trail_record(event, account=account, region=region, tags=pointed)
        if record is not None:
            yield record


class _TagPointer:
    """Which digest a tag pointed at, at a second, from the pushes of tagged manifests."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        pushes: dict[tuple[str, str], list[tuple[str, int, str]]] = {}
        for n, e in enumerate(events):
            target = e["target"]
            if e["action"] == "push" and target.get("tag") and _is_manifest_target(target):
                pushes.setdefault((target["repository"], target["tag"]), []).append(
                    (_second(e["timestamp"]), n, target["digest"]))
        self._pushes = {key: sorted(rows) for key, rows in pushes.items()}

    def at(self, repository: str, tag: str, second: str) -> str | None:
        rows = self._pushes.get((repository, tag), [])
        i = bisect.bisect_right(rows, (second, float("inf"), ""))  # the second's last push
        return rows[i - 1][2] if i else None


def trail_record(event: dict[str, Any], *, account: str, region: str,
                 tags: _TagPointer | None = None) -> dict[str, Any] | None:
    """The CloudTrail record of one Distribution event, or None when ECR's trail would hold
    nothing the collector reads. Without ``tags`` a pull names its tag when it has one."""
    target = event["target"]
    action = event["action"]
    repository = target["repository"]
    digest, tag = target.get("digest"), target.get("tag")
    blob = not _is_manifest_target(target)
    time = _second(event["timestamp"])
    params: dict[str, Any] = {"repositoryName": repository, "registryId": account}
    response: dict[str, Any] | None = None
    if action == "pull" and not blob:
        name = "BatchGetImage"
        by_tag = tag and (tags is None or tags.at(repository, tag, time) == digest)
        params["imageIds"] = [{"imageTag": tag} if by_tag else {"imageDigest": digest}]
    elif action == "push" and not blob and tag:
        name = "PutImage"
        params.update(imageTag=tag, imageManifestMediaType=target.get("mediaType"))
        response = {"image": {"registryId": account, "repositoryName": repository,
                              "imageId": {"imageDigest": digest, "imageTag": tag},
                              "imageManifestMediaType": target.get("mediaType")}}
    elif action == "delete" and (digest or tag):
        name = "BatchDeleteImage"
        image_id = {"imageDigest": digest} if digest else {"imageTag": tag}
        params["imageIds"] = [image_id]
        response = {"imageIds": [image_id], "failures": []}
    else:
        return None
    request = event.get("request") or {}
    actor = (event.get("actor") or {}).get("name")
    addr = client_key(request.get("addr")) or "10.0.0.1"
    role = _ROLE_CHARS.sub("-", actor)[:64] if actor else "nodes"
    session = _ROLE_CHARS.sub("-", addr)[:64]
    return {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole", "principalId": f"AROA{account}:{session}",
            "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session}",
            "accountId": account,
        },
        "eventTime": time, "eventSource": "ecr.amazonaws.com", "eventName": name,
        "awsRegion": region, "sourceIPAddress": addr,
        "userAgent": request.get("useragent") or "AWS Internal",
        "requestParameters": params, "responseElements": response,
        "eventID": event["id"], "readOnly": name == "BatchGetImage",
        "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": account,
        "eventCategory": "Management",
    }


def _is_manifest_target(target: dict[str, Any]) -> bool:
    media_type = target.get("mediaType")
    return "/blobs/" not in target.get("url", "") and (
        media_type is None or is_manifest_media_type(media_type))


def _second(timestamp: str) -> str:
    """An event's time as CloudTrail writes it (UTC, to the second; it sorts as time does)."""
    return parse_time(timestamp).strftime("%Y-%m-%dT%H:%M:%SZ")
