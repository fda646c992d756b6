"""Cron expressions as crontab(5) reads them, for APScheduler 3.

APScheduler 3's ``CronTrigger.from_crontab`` passes the day-of-week field through unchanged,
and APScheduler numbers days from Monday = 0, while crontab numbers them from Sunday = 0 (7 is
Sunday too). So ``0 9 * * 1-5`` fired Tuesday to Saturday. :func:`cron_trigger` turns a
numeric day-of-week field into day names first; names pass through as they are.
"""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger

from .errors import ConfigError

__all__ = ["cron_trigger", "crontab_weekdays"]

# crontab's day numbers 0-7 (0 and 7 are Sunday) by name.
_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _day(text: str, expr: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 7:
        raise ConfigError(f"cron {expr!r}: day of week {text!r} is not 0-7 or a name")
    return int(text)


def crontab_weekdays(field: str, expr: str = "") -> str:
    """A crontab day-of-week field in APScheduler's terms: numbers become names (``1-5`` →
    ``mon,tue,wed,thu,fri``; ``*/2`` → ``sun,tue,thu,sat``); a field with names stays."""
    if field == "*" or any(c.isalpha() for c in field):
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = _day(step_text, expr) if step_text else 1
        if step == 0:
            raise ConfigError(f"cron {expr!r}: a step of 0 in the day of week")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, _, high = span.partition("-")
            first, last = _day(low, expr), _day(high, expr)
            if first > last:
                raise ConfigError(f"cron {expr!r}: day-of-week range {span!r} runs backwards")
        else:
            first = _day(span, expr)
            last = 7 if step_text else first  # "1/2": from Monday on, every other day
        days.update(range(first, last + 1, step))
    seen: list[str] = []
    for day in sorted(days):
        if _NAMES[day] not in seen:
            seen.append(_NAMES[day])
    return ",".join(seen)


def cron_trigger(expr: str, timezone: str = "UTC") -> CronTrigger:
    """A trigger for a five-field crontab expression, days of week counted as crontab does."""
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"cron {expr!r}: expected 5 fields, got {len(fields)}")
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=crontab_weekdays(weekday, expr), timezone=timezone)
    except ValueError as exc:
        raise ConfigError(f"cron {expr!r}: {exc}") from exc
