"""The one ASGI app of ``tagwarden serve``: the collector, ``/v1/refs``, ``/healthz``, ``/metrics``.

:func:`build_app` is a small composition function. Other parts add themselves here: extra
routes or mounts in ``routes``, lifespan hooks (the scheduler) in ``lifespans`` — async context
managers entered after the collector's writer has started and left, in reverse order, before
it stops (so pending events are still written on shutdown) — and the notifier's part (the Slack
endpoint, its background start, its status in ``/healthz`` and ``/metrics``) in ``notifier``.
:func:`serve_app` is the composition root ``tagwarden serve`` runs: it adds the installed
notifier's part (:func:`recommender.notify.load_notifier`) and the scheduler;
:func:`app_from_env` builds it in each worker process of ``tagwarden serve --workers N``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import datetime

import anyio.to_thread
from prometheus_client import Gauge
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .collector.app import Collector, json_response
from .collector.metrics import CONTENT_TYPE, CollectorMetrics
from .collector.writer_process import ProcessWriter
from .config import Config
from .health import health_routes
from .jobruns import JobRuns, JobRunsCollector
from .logs import configure_logging
from .notify import Notifier, ServerParts, load_notifier
from .refs.api import RefsApi
from .store import Store
from .timeutil import utcnow

log = logging.getLogger(__name__)

__all__ = ["LifespanHook", "app_from_env", "build_app", "configure_logging", "serve_app"]

# How ``tagwarden serve --workers N`` tells its workers which writer to run and how much to
# log (not settings).
WRITER_ENV = "TAGWARDEN_SERVE_WRITER"
LOG_LEVEL_ENV = "TAGWARDEN_SERVE_LOG_LEVEL"

# A hook gets the app and returns an async context manager that lives as long as the server.
LifespanHook = Callable[[Starlette], AbstractAsyncContextManager[None]]


def build_app(
    config: Config,
    store: Store,
    *,
    clock: Callable[[], datetime] = utcnow,
    routes: Sequence[BaseRoute] = (),
    lifespans: Sequence[LifespanHook] = (),
    collector: Collector | None = None,
    notifier: ServerParts | None = None,
) -> Starlette:
    """Compose the server. ``collector`` may be given pre-built (tests, other writers)."""
    metrics = collector.metrics if collector is not None else CollectorMetrics()
    collector = collector if collector is not None else Collector(
        config, store, metrics=metrics, clock=clock
    )
    # Every replica tells each job's last success, duration and failures (from the store).
    metrics.add_live(JobRunsCollector(JobRuns(store, ttl=config["scheduler.claim_ttl"]).status))
    notifier_ready = None
    if notifier is not None:
        routes = [*routes, *notifier.routes]
        lifespans = [*lifespans, *notifier.lifespans]
        # Set at each scrape; with several workers, the one answering tells its own state.
        notifier_ready = Gauge(
            "tagwarden_notifier_ready", "1 when the notifier (Slack) can take requests, 0 while "
            "it is off, starting or unreachable.", ["notifier"], registry=metrics.registry,
            multiprocess_mode="livemostrecent").labels(notifier.name)

    async def healthz(request: Request) -> Response:
        def probe() -> None:
            with store.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await anyio.to_thread.run_sync(probe)
        except Exception as exc:  # any failure of the probe means "not healthy"
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["?"]
            return json_response({"status": "unavailable", "error": f"store: {reason[0]}"}, 503)
        if not collector.batcher.running:
            return json_response({"status": "unavailable", "error": "writer not running"}, 503)
        body = {"status": "ok", "store": store.dialect}
        if notifier is not None:  # never a reason to be unhealthy: the collector serves
            body[notifier.name] = notifier.status()
        return json_response(body)

    async def metrics_endpoint(request: Request) -> Response:
        if notifier is not None and notifier_ready is not None:
            notifier_ready.set(1 if notifier.ready() else 0)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(collector.batcher)
            for hook in lifespans:
                await stack.enter_async_context(hook(app))
            yield

    app = Starlette(
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        middleware=[Middleware(_FastPaths, endpoints=collector.fast_paths())],
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *health_routes(store, writer_running=lambda: collector.batcher.running),
            *collector.routes(),
            *RefsApi(config, store, clock=clock).routes(),  # declared references (CI)
            *routes,
        ],
        lifespan=lifespan,
    )
    app.state.collector = collector
    app.state.config = config
    app.state.store = store
    return app


def serve_app(config: Config, store: Store, *, clock: Callable[[], datetime] = utcnow,
              writer: str = "thread", notifier: Notifier | None = None) -> Starlette:
    """What ``tagwarden serve`` runs: :func:`build_app` plus the notifier's part (the Slack
    endpoint or Socket Mode connection, started in the background) and the scheduler, when
    configured. ``notifier`` defaults to the installed one.

    ``writer="process"`` writes the collector's events from a child process
    (:class:`ProcessWriter`: off the event loop's GIL) instead of a thread of this one.
    """
    from .scheduler import lifespan_hook

    notifier = notifier if notifier is not None else load_notifier(config)
    parts = notifier.server_parts(store, clock=clock)
    hooks: list[LifespanHook] = []
    if config["scheduler.enabled"]:
        hooks.append(lifespan_hook(config, store, notifier=notifier))  # leader-elected
    collector = None
    url = store.engine.url
    if writer == "process" and url.get_backend_name() == "sqlite" and url.database in (
            None, "", ":memory:"):
        writer = "thread"  # an in-memory database exists only in this process
    if writer == "process":
        collector = Collector(config, store, clock=clock, writer=ProcessWriter(
            url.render_as_string(hide_password=False),
            raw_retention=config["store.raw_retention"]))
    elif writer != "thread":
        raise ValueError(f"writer must be 'thread' or 'process', not {writer!r}")
    return build_app(config, store, clock=clock, lifespans=hooks, collector=collector,
                     notifier=parts)


def app_from_env() -> Starlette:
    """uvicorn factory for ``tagwarden serve --workers N``: each worker process builds its app.

    The parent passes the configuration file in ``TAGWARDEN_CONFIG`` and the store URL in
    ``TAGWARDEN_DB``; it has already migrated the store, so workers only check the schema
    (N workers migrating one SQLite file at once would race).
    """
    from .config import load
    from .store import open_store

    config = load(os.environ.get("TAGWARDEN_CONFIG") or None)
    configure_logging(os.environ.get(LOG_LEVEL_ENV) or config["log.level"],
                      config["log.format"])
    store = open_store(config["store.url"], migrate_schema=False)
    store.check_schema()
    return serve_app(config, store, writer=os.environ.get(WRITER_ENV) or "thread")


class _FastPaths:
    """POSTs to the collector's endpoints go straight to them, past Starlette's exception
    layer and router; everything else goes on as usual.

    At thousands of requests a second, every coroutine layer a request's answer passes
    through costs CPU on the event loop's GIL (a profile's figures are in bench/). The
    endpoints answer every refusal themselves; an unexpected exception still reaches the
    generic 500 handler, which sits outside this middleware.
    """

    def __init__(self, app: ASGIApp, endpoints: Mapping[str, ASGIApp]) -> None:
        self.app = app
        self.endpoints = dict(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.endpoints.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 answers as JSON, like every other refusal."""
    assert isinstance(exc, HTTPException)
    body = {"error": exc.detail, "path": request.url.path, "method": request.method}
    return json_response(body, exc.status_code, **(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response({"error": "internal error (see the server log)"}, 500)
