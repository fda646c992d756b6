"""``tagwarden serve``: the collector, declared references, the Slack endpoint and the
scheduler, under uvicorn."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from enum import StrEnum
from typing import Annotated, Any

import typer

from .state import app, state


class Writer(StrEnum):
    process = "process"
    thread = "thread"


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on (server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (server.port).")] = None,
    workers: Annotated[int, typer.Option(
        min=1, help="Worker processes. One is enough for most registries; two use both cores "
                    "of a small machine for HTTP and parsing (writes still serialise on SQLite).",
    )] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    writer: Annotated[Writer, typer.Option(
        help="Where the collector writes events: 'process' (a child process per worker: the "
             "event loop keeps its GIL, so HTTP and writing run at once) or 'thread' (a thread "
             "of the worker: a little less CPU per event, one GIL for both).",
    )] = Writer.process,
) -> None:
    """Run the HTTP server: collector endpoints, /v1/refs, /slack/events, /healthz, /metrics.

    Stops gracefully on SIGINT/SIGTERM: requests in flight are answered and the events already
    received are written before exit.
    """
    import uvicorn

    from ..server import LOG_LEVEL_ENV, WRITER_ENV, configure_logging

    st = state(ctx)
    config = st.config
    host = host or config["server.host"]
    port = config["server.port"] if port is None else port
    # tagwarden's own lines (Slack off, unreachable, ready; leadership, the scheduler's jobs)
    # at log.level, or debug when uvicorn is asked for it.
    ours = "debug" if log_level.lower() in ("debug", "trace") else config["log.level"]
    configure_logging(ours, config["log.format"])
    # Opened (and migrated) here, once, before any worker starts, and before any notice: a
    # store that cannot be opened is the one line the user sees.
    store = st.store
    if not config["collector.token"]:
        print("warning: collector.token is not set (TAGWARDEN_COLLECTOR_TOKEN): every POST "
              "will be refused", file=sys.stderr)
    notifier = st.notifier
    off = notifier.off_reason()
    if off is not None:
        print(f"Slack is off: {off}; /slack/events answers 503", file=sys.stderr)
    options: dict[str, Any] = dict(
        host=host,
        port=port,
        # uvloop and httptools when installed (uvicorn[standard]): the fast path.
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )
    announce = (f"tagwarden serving on http://{host}:{port} (store {store.url}"
                + (f", {workers} workers)" if workers > 1 else ")"))
    if workers == 1:
        from ..server import serve_app

        uv_config = uvicorn.Config(
            serve_app(config, store, writer=writer.value, notifier=notifier), **options)
        sock = _bind(uv_config)  # before the lifespan: a busy port starts nothing
        server = _announcing_server(uv_config, announce)
        server.run(sockets=[sock])
        if not server.started:
            raise typer.Exit(1)
        return
    # Workers are fresh processes that build their own app from the environment.
    metrics_dir = tempfile.mkdtemp(prefix="tagwarden-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ["TAGWARDEN_DB"] = config["store.url"]
    os.environ[WRITER_ENV] = writer.value
    os.environ[LOG_LEVEL_ENV] = ours
    if st.config_path is not None:
        os.environ["TAGWARDEN_CONFIG"] = str(st.config_path.resolve())
    try:
        _run_workers(uvicorn.Config(
            "recommender.server:app_from_env", factory=True, workers=workers,
            # A worker answers the parent's health pings only once its imports are done; on
            # a busy machine that takes longer than uvicorn's 5 s default, and it is killed.
            timeout_worker_healthcheck=60, **options), announce)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _bind(config: Any) -> Any:
    """The listening socket; a busy port is uvicorn's one error line and exit status 1."""
    try:
        return config.bind_socket()
    except SystemExit:  # uvicorn has logged the error already
        raise typer.Exit(1) from None


def _run_workers(config: Any, announce: str) -> None:
    """What ``uvicorn.run(workers=N)`` does, with the announcement once the socket is bound."""
    from uvicorn.supervisors import Multiprocess

    sock = _bind(config)
    _say(announce)
    with contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[sock]).run()


def _announcing_server(config: Any, announce: str) -> Any:
    """uvicorn's ``Server``, saying "serving on ..." only once its socket is bound."""
    import uvicorn

    class Announcing(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                _say(announce)

    return Announcing(config)
