from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recommender.timeutil import format_duration, parse_duration, parse_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Distribution's own example: nanoseconds and a negative offset.
        ("2016-03-09T14:44:26.402973972-08:00",
         datetime(2016, 3, 9, 22, 44, 26, 402973, tzinfo=UTC)),
        ("2026-01-02T03:04:05Z", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2026-01-02T03:04:05+0530", datetime(2026, 1, 1, 21, 34, 5, tzinfo=UTC)),
        ("2026-01-02", datetime(2026, 1, 2, tzinfo=UTC)),
        (1700000000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str | int, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01T00:00:00Z", "", True, None])
def test_parse_time_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_time(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("90d", timedelta(days=90)), ("24h", timedelta(hours=24)), ("1w2d", timedelta(days=9)),
     ("0.5s", timedelta(seconds=0.5)), ("30", timedelta(seconds=30))],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["forever", "10y", "d", "5d x"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration() -> None:
    assert format_duration(timedelta(days=3)) == "3d"
    assert format_duration(timedelta(hours=25)) == "25h"
    assert format_duration(timedelta(seconds=61)) == "61s"
    assert format_duration(timedelta(milliseconds=5)) == "0.005s"  # not "0s"
    assert format_duration(timedelta(seconds=90061, microseconds=500000)) == "90061.5s"


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3660)))
def test_a_formatted_duration_reads_back_as_itself(delta: timedelta) -> None:
    assert parse_duration(format_duration(delta)) == delta
