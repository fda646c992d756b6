"""Time parsing and formatting. Everything is timezone-aware UTC.

Only the shell (CLI, scheduler, server) reads the clock: it calls :func:`utcnow` and passes
the result down as ``now``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["EARLIEST_EVENT", "FUTURE_SKEW", "event_time_problem", "format_duration", "in_era",
           "parse_duration", "parse_time", "to_utc", "utcnow"]

# RFC 3339 with up to nanoseconds (Distribution writes nanoseconds; Python keeps microseconds).
_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:?\d{2})?$"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}

# No registry sent notifications before 2013: an earlier event time is a sender's broken clock
# (0001-01-01, the unix epoch), and one such day kept in the rollups breaks training for ever.
EARLIEST_EVENT = datetime(2013, 1, 1, tzinfo=UTC)
# How far ahead of the receiver's clock an event may be: senders' clocks drift, by seconds
# or a time zone's worth, but an event a day ahead is a wrong clock, not drift.
FUTURE_SKEW = timedelta(days=1)


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_utc(value: datetime) -> datetime:
    """A naive datetime is taken as UTC (what SQLite gives back)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_time(value: str | int | float | datetime) -> datetime:
    """Parse RFC 3339 (any offset, any fraction length), a date, or unix seconds, into UTC."""
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    text = value.strip()
    if text.lower() == "now":
        return utcnow()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    m = _RFC3339.match(text)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    frac = (m["frac"] or "")[:6].ljust(6, "0") if m["frac"] else "000000"
    tz = m["tz"] or "Z"
    if tz in ("Z", "z"):
        tz = "+00:00"
    elif ":" not in tz:
        tz = tz[:3] + ":" + tz[3:]
    try:
        parsed = datetime.fromisoformat(f"{m['date']}T{m['time']}.{frac}{tz}")
    except ValueError as exc:
        raise ValueError(f"not a valid time: {value!r}") from exc
    return parsed.astimezone(UTC)


def event_time_problem(value: datetime, latest: datetime | None) -> str | None:
    """Why ``value`` cannot be when an event happened (before :data:`EARLIEST_EVENT`, or after
    ``latest`` when given), or None when it can."""
    if value < EARLIEST_EVENT:
        return (f"{value.isoformat()} is before {EARLIEST_EVENT.date().isoformat()}, "
                "earlier than any registry: the sender's clock is wrong")
    if latest is not None and value > latest:
        return (f"{value.isoformat()} is later than {latest.isoformat()}, the latest time "
                "accepted: the sender's clock is wrong")
    return None


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """``"90d"``, ``"24h"``, ``"1w2d"``, ``"30m"``, or seconds as a number."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r}")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return timedelta(seconds=float(text))
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos and text[pos : m.start()].strip():
            raise ValueError(f"not a duration: {value!r}")
        total += float(m[1]) * _UNITS[m[2]]
        pos = m.end()
    if pos == 0 or text[pos:].strip():
        raise ValueError(f"not a duration: {value!r} (use e.g. 90d, 24h, 30m)")
    return timedelta(seconds=total)


def format_duration(delta: timedelta) -> str:
    """The largest of ``90d``, ``24h``, ``30m``, ``45s`` that is exact; otherwise seconds with
    their fraction, to the microsecond. :func:`parse_duration` reads it back."""
    total = delta.total_seconds()
    seconds = int(total)
    if seconds != total:
        return f"{total:.6f}".rstrip("0") + "s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def in_era(value: datetime, *, now: datetime) -> bool:
    """Whether a stored time can be real: not before the registry era, not more than a day
    after ``now``."""
    return EARLIEST_EVENT <= to_utc(value) <= now + FUTURE_SKEW
