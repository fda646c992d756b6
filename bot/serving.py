"""Slack's part of ``tagwarden serve``: ``/slack/events`` (or a Socket Mode connection), started
in the background so that Slack being down never keeps the collector from serving.

Building the Bolt app calls Slack's ``auth.test``. :class:`SlackStarter` does that in a thread
of its own, retrying with a growing pause while Slack cannot be reached (a refused connection,
a timeout, a 5xx or a 429), and says so in the log, in ``/healthz`` and in ``/metrics``; until
then ``/slack/events`` answers 503. A token Slack refuses is not retried: the bot stays off
until the configuration is fixed and the server restarted. Without a bot token the endpoint
answers 503 saying Slack is not configured.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from slack_bolt import App
from slack_bolt.error import BoltError
from slack_sdk.errors import SlackApiError, SlackClientError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from recommender.config import Config
from recommender.notify import ServerParts
from recommender.store import Store

from .app import EVENTS_PATH, create_bolt_app, default_client, slack_routes, start_socket_mode

__all__ = ["BACKOFF", "SlackStarter", "off_parts"]

log = logging.getLogger(__name__)

# Seconds between attempts to reach Slack; the last repeats.
BACKOFF: tuple[float, ...] = (1, 2, 5, 10, 30, 60)

READY = "ready"
STARTING = "starting"
UNREACHABLE = "unreachable, retrying"


def _answer(status: int, error: str) -> Response:
    return Response(json.dumps({"error": error, "path": EVENTS_PATH}), status,
                    media_type="application/json")


def off_parts(reason: str) -> ServerParts:
    """Slack is not configured: ``/slack/events`` says so (503) instead of a bare 404."""

    async def events(request: Request) -> Response:
        return _answer(503, f"Slack is not configured: {reason}")

    return ServerParts("slack", status=lambda: f"off: {reason}", ready=lambda: False,
                       routes=[Route(EVENTS_PATH, events, methods=["POST"])])


class SlackStarter:
    """Builds the Bolt app in a background thread, retrying until Slack answers.

    ``build`` makes the Bolt app (Bolt calls ``auth.test`` there); ``backoff`` is the pause
    before each retry, the last repeating. The thread starts with the server's lifespan and is
    stopped (and a Socket Mode connection closed) when it ends.
    """

    def __init__(self, config: Config, store: Store, *, clock: Callable[[], datetime],
                 backoff: Sequence[float] = BACKOFF,
                 build: Callable[..., App] = create_bolt_app) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.backoff = tuple(backoff) or BACKOFF
        self.build = build
        self.socket_mode = bool(config["slack.app_token"])
        self._status = STARTING
        self._endpoint: ASGIApp | None = None  # the guarded Bolt endpoint, once ready
        self._handler: Any = None  # Socket Mode's connection, closed on stop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- what the server reads -----------------------------------------------------------

    def status(self) -> str:
        return self._status

    def ready(self) -> bool:
        return self._status == READY

    def parts(self) -> ServerParts:
        routes = [] if self.socket_mode else [Route(EVENTS_PATH, _Events(self), methods=["POST"])]
        return ServerParts("slack", status=self.status, ready=self.ready, routes=routes,
                           lifespans=[self.lifespan])

    @asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        self.start()
        try:
            yield
        finally:
            await run_in_threadpool(self.stop)

    # --- the background start ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="slack-start", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            if self._handler is not None:
                self._handler.close()
                self._handler = None

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                self._attempt()
                return
            except _Refused as exc:
                self._status = f"off: Slack refused the bot token ({exc})"
                log.error("Slack refused the bot token (%s): Slack stays off until the "
                          "configuration is fixed and the server restarted", exc)
                return
            except (SlackClientError, OSError) as exc:
                pause = self.backoff[min(attempt, len(self.backoff) - 1)]
                first = self._status != UNREACHABLE
                self._status = UNREACHABLE
                (log.warning if first else log.info)(
                    "Slack cannot be reached (%s); retrying in %g s; the collector serves "
                    "meanwhile", _one_line(exc), pause)
                attempt += 1
                if self._stop.wait(pause):
                    return
            except Exception as exc:  # a bug, not Slack: keep serving, say it loudly
                self._status = f"off: failed to start ({_one_line(exc)})"
                log.error("the Slack app failed to start; Slack stays off", exc_info=exc)
                return

    def _attempt(self) -> None:
        client = default_client(self.config)
        try:
            bolt = self.build(self.config, self.store, client=client, clock=self.clock,
                              socket_mode=self.socket_mode)
        except BoltError as exc:
            # Bolt wraps the SlackApiError of its auth.test: a 5xx or 429 is Slack's trouble
            # (retry), any other answer is a verdict on the token.
            answer = exc.__context__
            if isinstance(answer, SlackApiError):
                status = getattr(answer.response, "status_code", 200)
                if status >= 500 or status == 429:
                    raise answer from None
                raise _Refused(str(answer.response.get("error") or answer)) from exc
            raise _Refused(str(exc)) from exc
        endpoint = None if self.socket_mode else slack_routes(bolt)[0].endpoint
        if self.socket_mode:
            handler = start_socket_mode(bolt, self.config)
            with self._lock:
                if self._stop.is_set():
                    handler.close()
                    return
                self._handler = handler
        log.info("Slack is ready (%s)", "Socket Mode" if self.socket_mode else
                 f"HTTP at {EVENTS_PATH}")
        self._endpoint = endpoint
        self._status = READY


class _Events:
    """``/slack/events`` as an ASGI app: 503 until Slack is ready, then the guarded Bolt
    endpoint (an ASGI app too: it reads the body itself, within its limit)."""

    def __init__(self, starter: SlackStarter) -> None:
        self.starter = starter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.starter._endpoint
        if endpoint is None:
            await _answer(503, f"Slack is not ready: {self.starter.status()}")(scope, receive, send)
            return
        await endpoint(scope, receive, send)


class _Refused(Exception):
    """Slack answered ``auth.test`` with an error that retrying will not change."""


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
