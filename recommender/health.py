"""Liveness and readiness, apart: a database outage takes a replica out of the Service's
endpoints (``/readyz``) but must not make Kubernetes restart it (``/livez``), or every pod would
restart together and come back to the same outage.

* ``GET /livez``: 200 whenever the process answers HTTP; it touches nothing else.
* ``GET /readyz``: 200 when the store answers, its schema is at the newest migration and the
  collector's writer runs; else 503 with ``{"status": "unavailable", "error": <reason, one line>}``.

``/healthz`` (in :mod:`recommender.server`) stays as it was for existing probes and the
Dockerfile's ``HEALTHCHECK``: the store answers a query and the writer runs.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .collector.app import json_response
from .errors import StoreError
from .store import Store

__all__ = ["health_routes"]


def health_routes(store: Store, *, writer_running: Callable[[], bool]) -> list[Route]:
    """``/livez`` and ``/readyz`` for ``store`` and the collector's writer."""

    async def livez(request: Request) -> Response:
        return json_response({"status": "ok"})

    # A database that accepts connections but never answers holds a check's thread until TCP
    # gives up; the prober does not wait that long and asks again. One check at a time, so
    # repeated probes cannot use up the threads the rest of the server runs on.
    checking = False

    async def readyz(request: Request) -> Response:
        nonlocal checking
        if checking:
            return json_response({"status": "unavailable",
                                  "error": "store: the previous check has not answered yet"}, 503)
        checking = True
        try:
            await anyio.to_thread.run_sync(store.check_schema)
        except Exception as exc:  # any failure of the check means "not ready"
            return json_response({"status": "unavailable", "error": _reason(exc)}, 503)
        finally:
            checking = False
        if not writer_running():
            return json_response({"status": "unavailable", "error": "writer not running"}, 503)
        return json_response({"status": "ok", "store": store.dialect})

    return [Route("/livez", livez, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]


def _reason(exc: Exception) -> str:
    """The first line: a :class:`StoreError` says what it could not do and the database's own
    words; anything else gets the database's words (``orig``) with a prefix."""
    if isinstance(exc, StoreError):
        text = str(exc)
    else:
        text = "store: " + str(getattr(exc, "orig", None) or exc)
    return (text.strip().splitlines() or ["store: ?"])[0]
