"""Strict field access on decoded JSON, shared by the parsers.

Every helper raises :class:`PayloadError` with ``where`` naming the offending field
(``events[3].target.digest``), so an HTTP 400 or a CLI line says exactly what is wrong.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

from ..errors import PayloadError
from ..reference import is_digest
from ..timeutil import EARLIEST_EVENT, event_time_problem, parse_time

__all__ = [
    "check_time",
    "content_id",
    "get_digest",
    "get_dict",
    "get_int",
    "get_list",
    "get_str",
    "get_time",
    "join",
    "require_dict",
]

_INT_MAX = 2**63 - 1  # BIGINT
_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer"}


def join(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def require_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{where or 'document'} must be an object, got {_kind(value)}",
                           where=where or None)
    return value


def _get(doc: dict[str, Any], key: str, where: str, typ: type, required: bool) -> Any:
    value = doc.get(key)
    if value is None:
        if required:
            path = join(where, key)
            raise PayloadError(f"{path} is required", where=path)
        return None
    if not isinstance(value, typ) or isinstance(value, bool):
        path = join(where, key)
        raise PayloadError(f"{path} must be {_TYPE_NAMES[typ]}, got {_kind(value)}", where=path)
    return value


# The getters below check the common, valid case first with as little work as possible (they
# run for every field of every event); paths for error messages are only built on failure.

def get_dict(doc: dict[str, Any], key: str, where: str, *, required: bool = False
             ) -> dict[str, Any] | None:
    value = doc.get(key)
    if type(value) is dict:
        return value
    result: dict[str, Any] | None = _get(doc, key, where, dict, required)
    return result


def get_list(doc: dict[str, Any], key: str, where: str, *, required: bool = False
             ) -> list[Any] | None:
    value = doc.get(key)
    if type(value) is list:
        return value
    result: list[Any] | None = _get(doc, key, where, list, required)
    return result


def get_str(doc: dict[str, Any], key: str, where: str, *, required: bool = False,
            max_len: int = 512) -> str | None:
    value = doc.get(key)
    if type(value) is str and 0 < len(value) <= max_len:
        return value
    value = _get(doc, key, where, str, required)
    if value is None:
        return None
    path = join(where, key)
    if required and not value:
        raise PayloadError(f"{path} must not be empty", where=path)
    if len(value) > max_len:
        raise PayloadError(f"{path} is longer than {max_len} characters", where=path)
    return None  # the empty string: absent


def get_int(doc: dict[str, Any], key: str, where: str, *, required: bool = False) -> int | None:
    value = doc.get(key)
    if type(value) is int and 0 <= value <= _INT_MAX:
        return value
    value = _get(doc, key, where, int, required)
    if value is not None and value < 0:
        path = join(where, key)
        raise PayloadError(f"{path} must not be negative", where=path)
    if value is not None and value > _INT_MAX:
        path = join(where, key)
        raise PayloadError(f"{path} is too large", where=path)
    return value


def get_digest(doc: dict[str, Any], key: str, where: str, *, required: bool = False
               ) -> str | None:
    value = get_str(doc, key, where, required=required)
    if value is not None and not is_digest(value):
        path = join(where, key)
        raise PayloadError(f"{path} is not a sha256 digest: {value[:80]!r}", where=path)
    return value


def get_time(doc: dict[str, Any], key: str, where: str, latest: datetime | None = None
             ) -> datetime:
    """A time no earlier than the registry era and, given ``latest``, no later than it
    (:func:`check_time`)."""
    value = doc.get(key)
    if type(value) is str and len(value) == 30 and value[29] == "Z" and value[19] == ".":
        # Distribution's usual shape, 2026-03-01T10:00:00.123456789Z: Python keeps
        # microseconds, so drop the last three digits and skip the general parser. (An offset
        # in the string: ``.replace(tzinfo=UTC)`` costs ten times the parse.)
        try:
            time = datetime.fromisoformat(value[:26] + "+00:00")
        except ValueError:
            pass  # the general parser explains what is wrong
        else:
            if time >= EARLIEST_EVENT and (latest is None or time <= latest):
                return time
            return check_time(time, join(where, key), latest)
    path = join(where, key)
    if value is None:
        raise PayloadError(f"{path} is required", where=path)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PayloadError(f"{path} must be a time, got {_kind(value)}", where=path)
    if isinstance(value, str) and value.strip().lower() == "now":
        raise PayloadError(f"{path} must be an RFC 3339 time", where=path)
    try:
        time = parse_time(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise PayloadError(f"{path}: {exc}", where=path) from None
    return check_time(time, path, latest)


def check_time(time: datetime, path: str, latest: datetime | None) -> datetime:
    """``time``, or :class:`PayloadError` naming ``path`` when it cannot be an event's time:
    before the registry era, or after ``latest`` (the receiver's clock plus a little skew,
    or a file ingest's ``--now``)."""
    problem = event_time_problem(time, latest)
    if problem is not None:
        raise PayloadError(f"{path}: {problem}", where=path)
    return time


def content_id(obj: Any) -> str:
    """A stable id for a source that sends none: the hash of the canonical JSON."""
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()[:64]
