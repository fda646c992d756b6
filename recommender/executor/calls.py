"""The executor's registry calls, each one recorded for the audit log."""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["CallLog"]


class CallLog:
    """A :class:`~recommender.registry.CallRecorder` that keeps the calls per thread: each
    worker thread works on one item at a time, and its calls go into that item's audit rows.
    The registry backend hands in targets already redacted."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _calls(self) -> list[dict[str, Any]]:
        calls = getattr(self._local, "calls", None)
        if calls is None:
            calls = self._local.calls = []
        return calls  # type: ignore[no-any-return]

    def record(self, operation: str, target: str, status: int | str,
               retry_after: float | None = None) -> None:
        call: dict[str, Any] = {"method": operation, "url": target, "status": status}
        if retry_after is not None:
            call["retry_after"] = retry_after
        self._calls().append(call)

    def drain(self) -> list[dict[str, Any]]:
        calls = self._calls()
        self._local.calls = []
        return calls
