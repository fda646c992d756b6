"""A small fake of the Slack Web API on loopback, for tests, benchmarks and the demo.

Slack's servers cannot be reached from here, so (like bolt-python's own
``tests/mock_web_api_server``) we run a real HTTP server on an ephemeral port that answers the
methods the bot calls, records every request, and can inject failures (429 with
``Retry-After``, 500). Point ``WebClient(base_url=fake.api_url)`` at it and give interaction
payloads ``response_url=fake.response_url(...)``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeSlack", "Recorded"]


@dataclass
class Recorded:
    """One request the fake received: ``method`` is the API method (``chat.update``) or
    ``response_url``; ``args`` the decoded form/JSON/query arguments."""

    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    at: float
    path: str = ""

    @property
    def blocks(self) -> list[dict[str, Any]]:
        blocks = self.args.get("blocks") or []
        return json.loads(blocks) if isinstance(blocks, str) else list(blocks)


@dataclass
class _Failure:
    status: int
    retry_after: int | None
    times: int


@dataclass
class FakeSlack:
    """``with FakeSlack() as fake: ...``; ``fake.api_url`` ends with ``/api/``."""

    team_id: str = "T0TAGWARDEN"
    bot_user_id: str = "U0TAGBOT"
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _failures: dict[str, list[_Failure]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: Any = field(default_factory=lambda: itertools.count(1))
    _server: ThreadingHTTPServer | None = None
    _ws_server: Any = None
    _ws: Any = None
    socket_received: list[dict[str, Any]] = field(default_factory=list)
    _thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake._handle(self)

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-slack")
        self._thread.start()
        return self

    def enable_socket_mode(self) -> None:
        """Serve Socket Mode too: ``apps.connections.open`` hands out a ``ws://`` URL here;
        :meth:`socket_send` pushes envelopes to the connected app, its acks are recorded in
        ``socket_received``."""
        from websockets.sync.server import ServerConnection, serve

        def handler(ws: ServerConnection) -> None:
            self._ws = ws
            ws.send(json.dumps({"type": "hello", "num_connections": 1,
                                "connection_info": {"app_id": "A0TAGWARDEN"}}))
            for message in ws:
                with self._lock:
                    self.socket_received.append(json.loads(message))

        self._ws_server = serve(handler, "127.0.0.1", 0)
        threading.Thread(target=self._ws_server.serve_forever, daemon=True,
                         name="fake-slack-socket").start()

    def socket_send(self, envelope: dict[str, Any], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self._ws is None:
            if time.monotonic() > deadline:
                raise AssertionError("no Socket Mode client connected")
            time.sleep(0.02)
        self._ws.send(json.dumps(envelope))

    def stop(self) -> None:
        if self._ws_server is not None:
            self._ws_server.shutdown()
            self._ws_server = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def response_url(self, name: str = "r") -> str:
        return f"{self.url}/response/{name}"

    # --- test controls ------------------------------------------------------------------------

    def fail(self, method: str, status: int, *, retry_after: int | None = None,
             times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``status`` (429 adds Retry-After)."""
        with self._lock:
            self._failures.setdefault(method, []).append(_Failure(status, retry_after, times))

    def recover(self, method: str) -> None:
        """Forget the failures still queued for ``method``: Slack is back."""
        with self._lock:
            self._failures.pop(method, None)

    def calls(self, method: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0,
                 where: Callable[[Recorded], bool] | None = None) -> list[Recorded]:
        """Wait until at least ``count`` matching calls arrived; return them (or fail)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.calls(method) if where is None or where(r)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} {method} call(s), got {len(found)}: "
                                     f"{[r.method for r in self.requests]}")
            time.sleep(0.02)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- the server side ----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        args: dict[str, Any] = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        ctype = h.headers.get("Content-Type", "")
        if raw and "json" in ctype:
            args.update(json.loads(raw))
        elif raw:
            args.update({k: v[-1] for k, v in parse_qs(raw.decode()).items()})
        if parts.path.startswith("/api/"):
            method = parts.path[len("/api/"):]
        elif parts.path.startswith("/response/"):
            method = "response_url"
        else:
            self._send(h, 404, {"ok": False, "error": "unknown_path"})
            return
        with self._lock:
            self.requests.append(Recorded(method, args, dict(h.headers.items()), time.monotonic(),
                                          parts.path))
            failure = self._take_failure(method)
        if failure is not None:
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after else {}
            self._send(h, failure.status, {"ok": False, "error": "ratelimited"
                                           if failure.status == 429 else "fatal_error"}, headers)
            return
        self._send(h, 200, self._answer(method, args))

    def _take_failure(self, method: str) -> _Failure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        return failure

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://tagwarden.slack.com/", "team": "tagwarden",
                    "user": "tagwarden", "team_id": self.team_id, "user_id": self.bot_user_id,
                    "bot_id": "B0TAGBOT", "is_enterprise_install": False}
        if method in {"chat.postMessage", "chat.update"}:
            ts = args.get("ts") or f"{1700000000 + next(self._ts)}.000100"
            return {"ok": True, "channel": args.get("channel"), "ts": ts,
                    "message": {"text": args.get("text"), "ts": ts}}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"{1700000000 + next(self._ts)}.000200"}
        if method == "usergroups.users.list":
            group = args.get("usergroup", "")
            if group not in self.usergroups:
                return {"ok": False, "error": "no_such_subteam"}
            return {"ok": True, "users": list(self.usergroups[group])}
        if method in {"views.open", "views.update", "views.push"}:
            view = args.get("view")
            view = json.loads(view) if isinstance(view, str) else view
            return {"ok": True, "view": {"id": f"V{next(self._ts)}", **(view or {})}}
        if method == "response_url":
            return {"ok": True}
        if method == "apps.connections.open":
            if self._ws_server is None:
                return {"ok": False, "error": "socket_mode_not_enabled"}
            port = self._ws_server.socket.getsockname()[1]
            return {"ok": True, "url": f"ws://127.0.0.1:{port}/link/?ticket=fake"}
        return {"ok": False, "error": "unknown_method"}

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
