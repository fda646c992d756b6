"""Registry calls of the executor: each one recorded for the audit log, and the client factory."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from ..config import Config
from ..registry.auth import RegistryAuth
from ..registry.client import RegistryClient, redact_url, retry_after

__all__ = ["CallLog", "make_registry_client"]


class CallLog:
    """Records registry calls per thread: each worker thread works on one item at a time."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _calls(self) -> list[dict[str, Any]]:
        calls = getattr(self._local, "calls", None)
        if calls is None:
            calls = self._local.calls = []
        return calls  # type: ignore[no-any-return]

    def record(self, method: str, url: str, status: int | str,
               retry_after: float | None = None) -> None:
        call: dict[str, Any] = {"method": method, "url": redact_url(url), "status": status}
        if retry_after is not None:
            call["retry_after"] = retry_after
        self._calls().append(call)

    def drain(self) -> list[dict[str, Any]]:
        calls = self._calls()
        self._local.calls = []
        return calls

    def transport(self, inner: httpx.BaseTransport | None = None) -> httpx.BaseTransport:
        return _RecordingTransport(self, inner or httpx.HTTPTransport())


class _RecordingTransport(httpx.BaseTransport):
    def __init__(self, log: CallLog, inner: httpx.BaseTransport) -> None:
        self.log = log
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self.inner.handle_request(request)
        except httpx.HTTPError as exc:
            self.log.record(request.method, str(request.url), type(exc).__name__)
            raise
        # A DELETE is not retried by the client and its error does not carry the header,
        # yet the next attempt must wait: keep a 429/503's Retry-After with the call.
        wait = retry_after(response) if response.status_code in (429, 503) else None
        self.log.record(request.method, str(request.url), response.status_code, wait)
        return response

    def close(self) -> None:
        self.inner.close()


def make_registry_client(config: Config, calls: CallLog, *,
                         inner: httpx.BaseTransport | None = None, url: str | None = None,
                         username: str | None = None,
                         password: Any = None) -> RegistryClient:
    """The production client: credentials from the config, every call recorded in ``calls``.

    ``url`` (with ``username``/``password``) names another registry, such as the backup one."""
    if url is None:
        url = config["registry.url"]
        username, password = config["registry.username"], config["registry.password"]
    if not url:
        from ..errors import ConfigError

        raise ConfigError("registry.url is not set: the executor needs a registry",
                          setting="registry.url")
    auth = RegistryAuth(username, password.reveal() if password else None)
    transport = calls.transport(inner or httpx.HTTPTransport(verify=config["registry.verify_tls"]))
    return RegistryClient(url, auth=auth, transport=transport,
                          timeout=config["registry.timeout"].total_seconds(),
                          verify=config["registry.verify_tls"])
