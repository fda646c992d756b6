"""The Bolt app and its HTTP endpoint.

HTTP mode is the default: Slack posts signed requests to ``/slack/events`` (Bolt verifies the
signature and rejects anything older than 5 minutes with 401). Socket Mode is the option for
workspaces that cannot expose a URL (``slack.app_token``); Bolt does not verify signatures
there, the socket itself is authenticated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_bolt.middleware import Middleware
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recommender.config import Config
from recommender.errors import ConfigError
from recommender.store import Store
from recommender.timeutil import utcnow

from .auth import Authorizer
from .context import BotContext
from .guard import SlackGuard
from .listeners import register_all

__all__ = ["EVENTS_PATH", "create_bolt_app", "default_client", "slack_routes",
           "start_socket_mode"]

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def default_client(config: Config) -> WebClient:
    """The production Web API client: the configured base URL; waits out 429s.

    slack_sdk's rate-limit handler sleeps for ``Retry-After`` and retries; a 5xx is raised so
    the caller can leave the work for the next run.
    """
    token = config["slack.bot_token"]
    if not token:
        raise ConfigError("slack.bot_token (SLACK_BOT_TOKEN) is not set",
                          setting="slack.bot_token")
    return WebClient(token=token.reveal(), base_url=config["slack.api_url"], timeout=10,
                     retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=1),
                                     RateLimitErrorRetryHandler(max_retry_count=3)])


class SameWorkspace(Middleware):
    """Refuses requests from any workspace but ``slack.team_id`` (403), before any listener.

    A plain ``Middleware`` rather than ``@app.middleware``: it runs on every acknowledgement,
    and Bolt's keyword injection for function middleware costs more than the check.
    """

    def __init__(self, team_id: str) -> None:
        self.team_id = team_id

    def process(self, *, req: BoltRequest, resp: BoltResponse,
                next: Callable[[], BoltResponse]) -> BoltResponse | None:  # noqa: A002
        team = req.context.team_id
        if team and team != self.team_id:
            log.warning("request from workspace %s refused", team)
            return BoltResponse(status=403, body="this workspace is not served")
        return next()


def create_bolt_app(config: Config, store: Store, *, client: WebClient | None = None,
                    clock: Callable[[], datetime] = utcnow, socket_mode: bool = False,
                    authorizer: Authorizer | None = None) -> App:
    """The Bolt ``App`` with every listener registered. Bolt calls ``auth.test`` here."""
    client = client if client is not None else default_client(config)
    secret = config["slack.signing_secret"]
    if not socket_mode and not secret:
        raise ConfigError("slack.signing_secret (SLACK_SIGNING_SECRET) is not set",
                          setting="slack.signing_secret")
    app = App(
        client=client,
        signing_secret=secret.reveal() if secret else None,
        request_verification_enabled=not socket_mode,
        # Bolt answers Slack once the listener returns. Every listener acks first and hands
        # its follow-up work to BotContext.later (a thread pool of its own), so a burst of
        # slow follow-up work never delays an acknowledgement.
        process_before_response=True,
        name="tagwarden",
    )
    ctx = BotContext(
        config=config, store=store, clock=clock,
        authorizer=authorizer or Authorizer(
            config, client, ttl=config["slack.authz_cache"].total_seconds()),
    )

    if config["slack.team_id"]:
        app.use(SameWorkspace(config["slack.team_id"]))
    register_all(app, ctx)

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("slack listener failed (%s): %s", body.get("type"), error, exc_info=error)

    return app


def slack_routes(bolt_app: App) -> list[Route]:
    """Starlette routes serving ``/slack/events``.

    Bolt's own Starlette adapter calls the synchronous ``App.dispatch`` on the event loop,
    which would serialize every click behind the slowest; we run it in the thread pool.
    """

    async def events(request: Request) -> Response:
        body = await request.body()
        bolt_response = await run_in_threadpool(bolt_app.dispatch,
                                                to_bolt_request(request, body))
        return to_starlette_response(bolt_response)

    # Bolt keeps no public copy of its signing secret.
    return [Route(EVENTS_PATH, SlackGuard(events, bolt_app._signing_secret), methods=["POST"])]


def start_socket_mode(bolt_app: App, config: Config) -> Any:
    """Connect over Socket Mode in the background; returns the handler (``.close()``)."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    token = config["slack.app_token"]
    if not token:
        raise ConfigError("slack.app_token (SLACK_APP_TOKEN) is needed for Socket Mode",
                          setting="slack.app_token")
    handler = SocketModeHandler(bolt_app, token.reveal())
    handler.connect()
    return handler
