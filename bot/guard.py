"""A guard in front of Bolt's ``/slack/events`` handler, for what Bolt answers with a 500.

Bolt parses the body before it checks the signature, and reads ``X-Slack-Request-Timestamp``
with ``int()``: a timestamp such as ``abc`` or ``1e3``, a body that is not JSON, or a payload
that is JSON but not an object (``payload=[]``, ``null``) raised out of Bolt. The guard runs
these steps first, in this order, so a refused request costs little and reaches no listener:

1. size: a body over ``max_body`` is refused (413) as soon as it is known to be, declared or
   counted, without reading the rest (Slack's payloads are a few kB);
2. signature, as Slack signs (HMAC-SHA256 of ``v0:{timestamp}:{body}``, a timestamp within
   five minutes of the clock): anything unsigned, forged, stale or malformed there is 401;
3. shape: a signed body Bolt could not parse into an object is 400, with a JSON error.

Bolt verifies the signature again afterwards; the guard only makes sure it gets something it
can.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.request.internals import parse_body
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import request_response
from starlette.types import Message, Receive, Scope, Send

__all__ = ["MAX_BODY", "SlackGuard"]

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024  # the largest Slack payloads (a modal's state) are tens of kB
MAX_SKEW = 5 * 60  # seconds, as Bolt and Slack's documentation
_MAX_TIMESTAMP_DIGITS = 12


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class SlackGuard:
    """An ASGI app: the checks above, then ``endpoint`` (a Starlette request handler) with the
    body already read. ``clock`` gives unix seconds, like the one Bolt checks against."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]], signing_secret: str,
                 *, max_body: int = MAX_BODY, clock: Callable[[], float] = time.time) -> None:
        if not signing_secret:
            raise ValueError("the Slack guard needs the signing secret")
        self.app = request_response(endpoint)
        self.secret = signing_secret.encode()
        self.max_body = max_body
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        try:
            body = await self._read(headers, receive)
            self._verify(headers, body)
            _check_shape(headers, body)
        except _Refused as refused:
            log.info("slack request refused (%d): %s", refused.status, refused.error)
            await JSONResponse({"error": refused.error}, refused.status)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, headers: Headers, receive: Receive) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise _Refused(413, f"request body of {declared} bytes is over the limit of "
                                f"{self.max_body}")
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                raise _Refused(400, "the request ended before its body")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body:  # a chunked body announces no length
                raise _Refused(413, f"request body is over the limit of {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _verify(self, headers: Headers, body: bytes) -> None:
        stamp = headers.get("x-slack-request-timestamp", "")
        signature = headers.get("x-slack-signature", "")
        if not stamp or not signature:
            raise _Refused(401, "the request is not signed (X-Slack-Signature)")
        # ASCII digits only: int() refuses "1e3" but takes " 12", "+12" and other digits.
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _MAX_TIMESTAMP_DIGITS):
            raise _Refused(401, "X-Slack-Request-Timestamp is not a unix time")
        if abs(self.clock() - int(stamp)) > MAX_SKEW:
            raise _Refused(401, "the request is stale (X-Slack-Request-Timestamp)")
        expected = "v0=" + hmac.new(self.secret, b"v0:" + stamp.encode() + b":" + body,
                                    hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode("latin-1")):
            raise _Refused(401, "the signature does not match (X-Slack-Signature)")


def _check_shape(headers: Headers, body: bytes) -> None:
    """Refuse a signed body that Bolt's own parser cannot make an object of."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(400, "the body is not UTF-8") from None
    content_type = headers.get("content-type")
    try:
        parsed: Any = parse_body(text, content_type.split(";")[0] if content_type else None)
    except ValueError as exc:  # json.JSONDecodeError
        raise _Refused(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise _Refused(400, f"the payload must be a JSON object, got {type(parsed).__name__}")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then whatever the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
