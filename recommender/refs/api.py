"""``POST /v1/refs``: declared references from CI pipelines.

Two body shapes, both JSON:

- a list of ``{"image", "source", "location"}`` objects: each source named replaces its set;
- ``{"source": S, "references": [{"image", "location"}, ...]}``: replaces the set of ``S``,
  and an empty list clears it (the list form cannot say "nothing any more").

Validation is strict -- unknown keys, empty strings, a reference outside the grammar or still
templated -- and names the offending item (``"where": "[3].image"``); nothing is stored unless
the whole body is valid, and all sources are replaced in one transaction. The bearer token is
the collector's (``collector.token``): 503 when unset, 401 when missing or wrong; a body that
is not JSON by its media type is refused with 415.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import Config
from ..errors import PayloadError, PayloadTooLarge, ReferenceError_, StoreError
from ..reference import parse_reference, registry_hosts
from ..store import Store
from ..timeutil import utcnow
from .found import DeclaredRef, looks_templated
from .store import ReplaceResult, record

__all__ = ["RefsApi", "parse_body"]

_ITEM_KEYS = frozenset({"image", "source", "location"})
_SET_KEYS = frozenset({"source", "references"})
_SET_ITEM_KEYS = frozenset({"image", "location"})


def _json(content: Any, status: int = 200, **headers: str) -> Response:
    return Response(orjson.dumps(content), status, headers or None, "application/json")


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"{where}.{key} must be a non-empty string", where=f"{where}.{key}")
    return value


def _reference(item: dict[str, Any], where: str, source: str) -> DeclaredRef:
    image = _string(item, "image", where).strip()
    location = _string(item, "location", where)
    if looks_templated(image):
        raise PayloadError(f"{where}.image is an unrendered template: {image!r}",
                           where=f"{where}.image", image=image)
    try:
        ref = parse_reference(image)
    except ReferenceError_ as exc:
        raise PayloadError(f"{where}.image: {exc.message}", where=f"{where}.image",
                           image=image) from exc
    return DeclaredRef(image=image, ref=ref, location=location, kind="api", detail=source)


def _object(value: Any, where: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be an object", where=where)
    unknown = sorted(set(value) - keys)
    if unknown:
        raise PayloadError(f"{where}: unknown key {unknown[0]!r} (expected "
                           f"{', '.join(sorted(keys))})", where=f"{where}.{unknown[0]}")
    return value


def parse_body(doc: Any) -> dict[str, list[DeclaredRef]]:
    """Validate a decoded body; the sets to record, by source. Raises :class:`PayloadError`."""
    sets: dict[str, list[DeclaredRef]] = {}
    if isinstance(doc, dict):
        body = _object(doc, "body", _SET_KEYS)
        source = _string(body, "source", "body")
        items = body.get("references")
        if not isinstance(items, list):
            raise PayloadError("body.references must be a list", where="body.references")
        sets[source] = [
            _reference(_object(item, f"references[{i}]", _SET_ITEM_KEYS), f"references[{i}]",
                       source)
            for i, item in enumerate(items)
        ]
        return sets
    if not isinstance(doc, list):
        raise PayloadError("expected a JSON list of {image, source, location} objects",
                           where="body")
    if not doc:
        raise PayloadError("empty list: nothing to record (to clear a source, post "
                           '{"source": ..., "references": []})', where="body")
    for i, item in enumerate(doc):
        where = f"[{i}]"
        obj = _object(item, where, _ITEM_KEYS)
        missing = sorted(_ITEM_KEYS - set(obj))
        if missing:
            raise PayloadError(f"{where}: missing {missing[0]!r}", where=f"{where}.{missing[0]}")
        source = _string(obj, "source", where)
        sets.setdefault(source, []).append(_reference(obj, where, source))
    return sets


class RefsApi:
    """The endpoint, with its collaborators (store, clock) given at construction."""

    def __init__(self, config: Config, store: Store, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock
        token = config["collector.token"]
        self._token = token.reveal().encode() if token else None
        self.max_body = int(config["collector.max_body_bytes"])
        self.hosts = registry_hosts(config["registry.url"], config["registry.hosts"])

    def routes(self) -> list[Route]:
        return [Route("/v1/refs", self.post_refs, methods=["POST"])]

    async def post_refs(self, request: Request) -> Response:
        refused = self._authorize(request)
        if refused is not None:
            return refused
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type and not media_type.endswith("json"):
            return _json({"error": f"unsupported media type {media_type!r}: send JSON",
                          "where": "header.content-type"}, 415)
        try:
            body = await self._read_body(request)
            at = self.clock()
            # Parsing thousands of references and the transaction both leave the event loop.
            sets, results = await anyio.to_thread.run_sync(self._handle, body, at)
        except PayloadError as exc:
            return _json(exc.as_dict(), exc.status_code)
        except StoreError as exc:
            return _json(exc.as_dict(), 503, **{"Retry-After": "1"})
        except ClientDisconnect:
            return Response(status_code=400)
        return _json({
            "references": sum(len(refs) for refs in sets.values()),
            "sources": {r.source: r.as_dict() for r in results},
        })

    def _handle(self, body: bytes, at: datetime) -> tuple[dict[str, list[DeclaredRef]],
                                                          list[ReplaceResult]]:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"body is not JSON: {exc}", where="body") from exc
        sets = parse_body(doc)
        return sets, record(self.store, sets, at=at, hosts=self.hosts)

    def _authorize(self, request: Request) -> Response | None:
        if self._token is None:
            return _json({"error": "collector.token is not set: POST /v1/refs refuses every "
                                   "request until it is configured",
                          "setting": "collector.token"}, 503)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return _json({"error": "missing bearer token (Authorization: Bearer ...)"}, 401,
                         **{"WWW-Authenticate": "Bearer"})
        # constant-time comparison: the token must not leak through response timing
        if not hmac.compare_digest(given.strip().encode("latin-1", "replace"), self._token):
            return _json({"error": "wrong bearer token"}, 401,
                         **{"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    async def _read_body(self, request: Request) -> bytes:
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > self.max_body:
                raise PayloadTooLarge(f"request body is over the limit of {self.max_body} bytes",
                                      limit=self.max_body, setting="collector.max_body_bytes")
            chunks.append(chunk)
        if not total:
            raise PayloadError("empty request body", where="body")
        return b"".join(chunks)
