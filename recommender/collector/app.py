"""The collector's HTTP endpoints (Starlette): registry notifications, ECR's CloudTrail records,
deploys, pod lists.

Every POST goes through the same steps, in this order, so a refused request costs little and
stores nothing:

1. the bearer token (``collector.token``, compared in constant time) — 401, or 503 when unset;
2. the media type — 415;
3. the body, read as a stream and refused as soon as it passes ``collector.max_body_bytes`` — 413;
4. JSON decoding (orjson) and A1's parser for the source — 400 naming the problem and ``where``;
5. the group-commit batcher — 200 once the events are durably stored, 503 when the store failed
   (the sender retries; duplicates are accepted and stored once). An id already stored with
   other content is no retry but a sender reusing ids: the answer counts it as
   ``conflicting``, a metric counts it and a warning names it.

The endpoints are plain ASGI apps (:class:`Endpoint`), not Starlette request handlers: at
thousands of requests a second, Starlette's ``Request``/``Response`` objects and exception
layers cost as much CPU as parsing the events. :meth:`Collector.fast_paths` lets the server
dispatch to them before Starlette's router (``server.py``).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import anyio.to_thread
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..config import Config, Secret
from ..errors import PayloadError, PayloadTooLarge, ReferenceError_, StoreError, TagwardenError
from ..store import Store
from ..timeutil import FUTURE_SKEW, parse_time, utcnow
from ..usage import Classifier
from . import cloudtrail, deploy, distribution, harbor, k8s
from .batcher import Batcher
from .events import Event
from .metrics import CollectorMetrics
from .payload import check_time
from .writer import EventWriter
from .writer_process import ProcessWriter

__all__ = ["Collector", "Endpoint", "json_response"]

log = logging.getLogger(__name__)

T = TypeVar("T")
# A handler gets the body and the ASGI scope; it returns (status, JSON content).
_Handler = Callable[[bytes, Scope], Awaitable[tuple[int, Any]]]

# Bodies above this are parsed on a worker thread so one big document does not stall the loop.
_PARSE_INLINE_BYTES = 256 * 1024
_JSON_LINES_TYPES = {"application/jsonl", "application/x-jsonlines", "text/plain"}
_MAX_SOURCE = 128  # k8s_snapshots.source is String(128)


def json_response(content: Any, status_code: int = 200, **headers: str) -> Response:
    return Response(orjson.dumps(content), status_code, headers or None, "application/json")


_JSON_HEADER = (b"content-type", b"application/json")


async def _send_json(send: Send, status: int, content: Any,
                     headers: Mapping[str, str] | None = None) -> None:
    """What :func:`json_response` sends, without building a Response object."""
    body = orjson.dumps(content)
    raw = [_JSON_HEADER, (b"content-length", b"%d" % len(body))]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _Refused(Exception):
    """A request refused before its events reach the store (status, body, metric reason)."""

    def __init__(self, status: int, body: dict[str, Any], reason: str, **headers: str) -> None:
        super().__init__(body.get("error"))
        self.status = status
        self.body = body
        self.reason = reason
        self.headers = headers


class Collector:
    """The collector endpoints of one app. Collaborators come in with production defaults.

    ``batcher`` wraps the writer (A1's ``EventWriter``, or a ``ProcessWriter`` running one in a
    child process); ``clock`` stamps pod snapshots that do
    not say when they were taken.
    """

    def __init__(
        self,
        config: Config,
        store: Store | None = None,
        *,
        classifier: Classifier | None = None,
        metrics: CollectorMetrics | None = None,
        batcher: Batcher | None = None,
        writer: EventWriter | ProcessWriter | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else CollectorMetrics()
        self.classifier = classifier if classifier is not None else Classifier.from_config(config)
        if writer is None:
            if store is None:
                raise ValueError("Collector needs a store or a writer")
            writer = EventWriter.from_config(store, config)
        self.writer: EventWriter | ProcessWriter = writer
        self.clock = clock
        self.batcher = batcher if batcher is not None else Batcher(
            writer,
            max_events=config["collector.batch_max_events"],
            max_delay=config["collector.batch_max_delay"].total_seconds(),
            metrics=self.metrics,
            clock=clock,
        )
        token: Secret | None = config["collector.token"]
        self._token = token.reveal().encode() if token else None
        self.max_body = int(config["collector.max_body_bytes"])

        self._endpoints = {
            "/v1/events/distribution": Endpoint(self, "distribution",
                                                self._events(self._distribution)),
            "/v1/events/harbor": Endpoint(self, "harbor", self._events(self._harbor)),
            "/v1/events/deploy": Endpoint(self, "deploy", self._events(self._deploy)),
            "/v1/events/cloudtrail": Endpoint(self, "cloudtrail",
                                              self._events(self._cloudtrail)),
            "/v1/k8s/pods": Endpoint(self, "k8s", self._pods),
        }

    def routes(self) -> list[Route]:
        return [Route(path, endpoint, methods=["POST"])
                for path, endpoint in self._endpoints.items()]

    def fast_paths(self) -> dict[str, Endpoint]:
        """The POST endpoints by exact path, for a dispatcher in front of the router."""
        return dict(self._endpoints)

    # --- parsers per source (decoded body -> events) ------------------------------------------

    def _latest(self) -> datetime:
        """The latest event time accepted now: the clock plus a sender's plausible skew."""
        return self.clock() + FUTURE_SKEW

    def _distribution(self, body: bytes) -> list[Event]:
        return distribution.parse_envelope_line(body, self.classifier, _decode,
                                                latest=self._latest())

    def _harbor(self, body: bytes) -> list[Event]:
        return harbor.parse_webhook(_decode(body), self.classifier, latest=self._latest())

    def _deploy(self, body: bytes) -> list[Event]:
        return deploy.parse_deploys(_decode_json_or_lines(body), latest=self._latest())

    def _cloudtrail(self, body: bytes) -> list[Event]:
        return cloudtrail.parse_cloudtrail(_decode_json_or_lines(body), self.classifier,
                                           latest=self._latest())

    def _events(self, parse: Callable[[bytes], list[Event]]) -> _Handler:
        async def handle(body: bytes, scope: Scope) -> tuple[int, Any]:
            events = await _run(parse, body)
            self.metrics.count_received(events)
            outcome = await self.batcher.store(events)
            if not outcome.conflicting:
                return 200, {"accepted": outcome.accepted}
            _log_conflicts(outcome.conflicting, scope)
            return 200, {"accepted": outcome.accepted,
                         "conflicting": len(outcome.conflicting)}

        return handle

    # --- the shared steps ------------------------------------------------------------------

    def _authorize(self, headers: Mapping[str, str]) -> None:
        if self._token is None:
            raise _Refused(503, {"error": "collector.token is not set: the collector refuses "
                                          "every POST until it is configured",
                                 "setting": "collector.token"}, "auth")
        header = headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise _Refused(401, {"error": "missing bearer token (Authorization: Bearer ...)"},
                           "auth", **{"WWW-Authenticate": "Bearer"})
        # Header values arrive decoded as latin-1; compare their bytes in constant time.
        if not hmac.compare_digest(given.strip().encode("latin-1", "replace"), self._token):
            raise _Refused(401, {"error": "wrong bearer token"}, "auth",
                           **{"WWW-Authenticate": 'Bearer error="invalid_token"'})

    async def _read_body(self, headers: Mapping[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise PayloadTooLarge(
                f"request body of {int(declared)} bytes is over the limit of {self.max_body}",
                limit=self.max_body, setting="collector.max_body_bytes",
            )
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            if chunk:
                total += len(chunk)
                if total > self.max_body:  # chunked bodies announce no length: count as they come
                    raise PayloadTooLarge(
                        f"request body is over the limit of {self.max_body} bytes",
                        limit=self.max_body, setting="collector.max_body_bytes",
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if not total:
            raise PayloadError("empty request body", where="body")
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # --- Kubernetes pod lists: one snapshot per request, not batched -----------------------

    async def _pods(self, body: bytes, scope: Scope) -> tuple[int, Any]:
        request = Request(scope)
        source = request.query_params.get("source", "").strip()
        if not source:
            raise PayloadError("query parameter source (the cluster name) is required",
                               where="query.source")
        if len(source) > _MAX_SOURCE:
            raise PayloadError(f"source is longer than {_MAX_SOURCE} characters",
                               where="query.source")
        at = request.query_params.get("at")
        taken_at = self.clock()
        if at is not None and at.strip().lower() != "now":
            try:
                taken_at = parse_time(at)
            except (ValueError, OverflowError, OSError) as exc:
                raise PayloadError(f"query parameter at: {exc}", where="query.at") from None
            check_time(taken_at, "query.at", self._latest())
        snapshot = await _run(
            lambda b: k8s.parse_pod_list(_decode(b), source=source, taken_at=taken_at), body
        )
        try:
            refs = await self.batcher.call(self.writer.write_snapshot, snapshot)
        except TagwardenError:
            raise
        except Exception as exc:
            log.exception("pod snapshot write failed")
            raise StoreError(f"the store refused the snapshot: {type(exc).__name__}",
                             temporary=True) from exc
        self.metrics.snapshots.inc()
        return 200, {"source": source, "taken_at": taken_at.isoformat(),
                     "pods": snapshot.pods, "refs": refs}


class Endpoint:
    """One collector POST endpoint as an ASGI app: the shared steps, then ``handle``.

    Every refusal is answered here as JSON (status, ``error``, ``where``), so nothing but a bug
    reaches the server's generic 500 handler.
    """

    def __init__(self, collector: Collector, source: str, handle: _Handler) -> None:
        self.collector = collector
        self.source = source
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        collector = self.collector
        metrics = collector.metrics
        source = self.source
        try:
            headers = _headers(scope)
            collector._authorize(headers)
            _check_media_type(headers)
            body = await collector._read_body(headers, receive)
            status, content = await self.handle(body, scope)
        except _Refused as refused:
            metrics.reject(source, refused.reason)
            return await _send_json(send, refused.status, refused.body, refused.headers)
        except PayloadError as exc:
            metrics.reject(source, "too_large" if exc.status_code == 413 else "payload")
            return await _send_json(send, exc.status_code, exc.as_dict())
        except ReferenceError_ as exc:  # a parser that let a bad image reference through
            metrics.reject(source, "payload")
            return await _send_json(send, 400, exc.as_dict())
        except StoreError as exc:
            metrics.reject(source, "store")
            log.warning("store failure on %s: %s", scope.get("path"), exc.message)
            return await _send_json(send, 503, exc.as_dict(), {"Retry-After": "1"})
        except ClientDisconnect:
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await _send_json(send, status, content)


def _log_conflicts(ids: tuple[str, ...], scope: Scope) -> None:
    """Name the ids a sender reused: their events are lost, and it is the sender's bug."""
    client = scope.get("client")
    log.warning("%s sent events with ids already stored with other content (conflicting, "
                "dropped): %s", client[0] if client else "a sender",
                ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else ""))


_WANTED = {b"authorization": "authorization", b"content-type": "content-type",
           b"content-length": "content-length"}


def _headers(scope: Scope) -> dict[str, str]:
    """The three request headers the shared steps read (the first of each, as Starlette's
    ``Headers.get``), decoded as latin-1. ASGI servers give header names in lower case."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = _WANTED.get(name)
        if key is not None and key not in found:
            found[key] = value.decode("latin-1")
    return found


def _check_media_type(headers: Mapping[str, str]) -> None:
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type and not media_type.endswith("json") and media_type not in _JSON_LINES_TYPES:
        raise _Refused(415, {"error": f"unsupported media type {media_type!r}: send JSON",
                             "where": "header.content-type"}, "media_type")


async def _run(fn: Callable[[bytes], T], body: bytes) -> T:
    if len(body) > _PARSE_INLINE_BYTES:
        return await anyio.to_thread.run_sync(fn, body)
    return fn(body)


def _decode(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"malformed JSON: {exc}", where="body") from None


def _decode_json_or_lines(body: bytes) -> Any:
    """One JSON document (an object or an array), or JSON lines (one object per line)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as whole:
        lines = [(n, line) for n, line in enumerate(body.splitlines(), 1) if line.strip()]
        if len(lines) < 2:
            raise PayloadError(f"malformed JSON: {whole}", where="body") from None
    docs: list[Any] = []
    for n, line in lines:
        try:
            docs.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"malformed JSON on line {n}: {exc}", where=f"line {n}") from None
    return docs

