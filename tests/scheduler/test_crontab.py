"""Cron expressions count days of the week as crontab does (Sunday = 0 or 7), not as
APScheduler 3 does (Monday = 0): the default suggest cron runs Monday to Friday."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recommender import config as config_mod
from recommender.crontab import cron_trigger, crontab_weekdays
from recommender.errors import ConfigError

MONDAY = datetime(2026, 11, 30, tzinfo=UTC)


def _weekdays(expr: str, timezone: str = "UTC") -> list[str]:
    """The day names of the fire times in the week from Monday 2026-11-30."""
    trigger = cron_trigger(expr, timezone)
    fired: list[str] = []
    fire = trigger.get_next_fire_time(None, MONDAY)
    while fire is not None and fire < MONDAY + timedelta(days=7):
        fired.append(fire.strftime("%a"))
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return fired


def test_the_default_crons_fire_on_the_days_crontab_means() -> None:
    config = config_mod.load(env={})
    assert _weekdays(config["scheduler.suggest_cron"]) == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    assert _weekdays(config["scheduler.retrain_cron"]) == ["Sun"]
    assert _weekdays(config["scheduler.digest_cron"]) == ["Mon"]
    assert _weekdays(config["scheduler.digest_cron"], "Asia/Tokyo") == ["Mon"]


@pytest.mark.parametrize(("field", "days"), [
    ("*", "*"), ("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"),
    ("*/2", "sun,tue,thu,sat"), ("1/2", "mon,wed,fri,sun"), ("5,6,0", "sun,fri,sat"),
    ("0-7", "sun,mon,tue,wed,thu,fri,sat"), ("mon-fri", "mon-fri"),
])
def test_numeric_days_become_names(field: str, days: str) -> None:
    assert crontab_weekdays(field) == days


@pytest.mark.parametrize("expr", ["0 9 * * 8", "0 9 * * 5-1", "0 9 * * */0", "0 9 * *",
                                  "61 9 * * 1", "0 9 * * 1-x"])
def test_a_bad_expression_is_a_config_error_naming_it(expr: str) -> None:
    with pytest.raises(ConfigError, match="cron"):
        cron_trigger(expr)


@given(st.sets(st.integers(min_value=0, max_value=7), min_size=1))
def test_a_list_of_days_fires_on_exactly_those_days(days: set[int]) -> None:
    names = {"Sun" if d in (0, 7) else ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][d - 1]
             for d in days}
    fired = _weekdays("0 9 * * " + ",".join(str(d) for d in sorted(days)))
    assert sorted(fired) == sorted(names)
