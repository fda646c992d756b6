"""``tagwarden serve``: the collector, declared references, the Slack endpoint and the
scheduler, under uvicorn."""

from __future__ import annotations

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

    from ..server import WRITER_ENV

    st = state(ctx)
    config = st.config
    host = host or config["server.host"]
    port = config["server.port"] if port is None else port
    if not config["collector.token"]:
        print("warning: collector.token is not set (TAGWARDEN_COLLECTOR_TOKEN): every POST "
              "will be refused", file=sys.stderr)
    store = st.store  # opened (and migrated) here, once, before any worker starts
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
    print(f"tagwarden serving on http://{host}:{port} (store {store.url}"
          + (f", {workers} workers)" if workers > 1 else ")"), file=sys.stderr, flush=True)
    if workers == 1:
        from ..server import serve_app

        server = uvicorn.Server(uvicorn.Config(serve_app(config, store, writer=writer.value),
                                               **options))
        server.run()
        if not server.started:
            raise typer.Exit(1)
        return
    # Workers are fresh processes that build their own app from the environment.
    metrics_dir = tempfile.mkdtemp(prefix="tagwarden-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ["TAGWARDEN_DB"] = config["store.url"]
    os.environ[WRITER_ENV] = writer.value
    if st.config_path is not None:
        os.environ["TAGWARDEN_CONFIG"] = str(st.config_path.resolve())
    try:
        # A worker answers the parent's health pings only once its imports are done; on a busy
        # machine that takes longer than uvicorn's 5 s default, and it would be killed.
        uvicorn.run("recommender.server:app_from_env", factory=True, workers=workers,
                    timeout_worker_healthcheck=60, **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
