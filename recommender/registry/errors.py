"""The Distribution API's failures, translated once: an error response into
:class:`~recommender.errors.RegistryError` (status, OCI error code, a redacted URL), and what
a response says about waiting (``Retry-After``)."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from ..errors import AuthError, NotFound, RegistryError, Unsupported

__all__ = ["error_from", "redact_url", "retry_after"]


def redact_url(url: str) -> str:
    """The URL without credentials or query values that may be secrets (upload state, tokens)."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    keep = [p for p in parts.query.split("&") if p.split("=", 1)[0] in {"n", "last"}]
    return urlunsplit((parts.scheme, host, parts.path, "&".join(keep), ""))


def error_from(response: httpx.Response, url: str) -> RegistryError:
    """Translate an error response: status, the OCI error code of its body, a redacted URL."""
    status = response.status_code
    code = message = None
    try:
        errors = orjson.loads(response.content).get("errors") or []
        if errors:
            code, message = errors[0].get("code"), errors[0].get("message")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        pass
    text = f"registry answered {status}" + (f" {code}" if code else "") + (
        f": {message}" if message else ""
    ) + f" ({url})"
    kind: type[RegistryError] = RegistryError
    if status in (401, 403):
        kind = AuthError
    elif status == 404:
        kind = NotFound
    elif status == 405 or code == "UNSUPPORTED":
        kind = Unsupported
    temporary = status == 429 or status >= 500
    return kind(text, status=status, code=code, url=url, temporary=temporary)


def retry_after(response: httpx.Response | None) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date counted from the response's own
    ``Date`` header (the registry's clock, so a skewed local clock does not matter) or, without
    one, from now. None when absent or unreadable."""
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        date = response.headers.get("date") if response is not None else None
        sent = parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - sent)
