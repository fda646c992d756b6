"""``tagwarden serve``: the collector (and later the Slack endpoint) under uvicorn."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .state import app, state


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on (server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (server.port).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Run the HTTP server: collector endpoints, /healthz, /metrics.

    Stops gracefully on SIGINT/SIGTERM: events already received are written before exit.
    """
    import uvicorn

    from ..server import build_app

    st = state(ctx)
    config = st.config
    host = host or config["server.host"]
    port = config["server.port"] if port is None else port
    if not config["collector.token"]:
        print("warning: collector.token is not set (TAGWARDEN_COLLECTOR_TOKEN): every POST "
              "will be refused", file=sys.stderr)
    from bot.app import server_parts

    from ..scheduler import lifespan_hook

    routes, hooks = server_parts(config, st.store)
    if config["scheduler.enabled"]:
        hooks.append(lifespan_hook(config, st.store))
    application = build_app(config, st.store, routes=routes, lifespans=hooks)
    server = uvicorn.Server(uvicorn.Config(
        application,
        host=host,
        port=port,
        # uvloop and httptools when installed (uvicorn[standard]): the fast path.
        loop="auto",
        http="auto",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=10,
    ))
    print(f"tagwarden serving on http://{host}:{port} (store {st.store.url})",
          file=sys.stderr, flush=True)
    server.run()
    if not server.started:
        raise typer.Exit(1)
