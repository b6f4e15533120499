"""Pure helpers: money from integer cents, times in the display zone, chart geometry, cursors, throttling."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ottrecon.console import paging
from ottrecon.console.charts import DayPoint, chart_start, daily_chart
from ottrecon.console.errors import BadFilter
from ottrecon.console.throttle import ADDRESS_LIMIT, USER_LIMIT, WINDOW_S, LoginThrottle
from ottrecon.console.times import format_age, format_time, today
from ottrecon.money import format_money


def test_money_is_formatted_from_integer_cents_with_the_currency() -> None:
    assert format_money(0, "CAD") == "0.00 CAD"
    assert format_money(5, "CAD") == "0.05 CAD"
    assert format_money(1250, "CAD") == "12.50 CAD"
    assert format_money(123456789, "USD") == "1,234,567.89 USD"
    assert format_money(-1250, "CAD") == "-12.50 CAD"
    assert format_money(-5, "CAD") == "-0.05 CAD"
    assert format_money(None, "CAD") == "—"
    # Beyond a float's exact range, still exact to the cent.
    assert format_money(2**53 + 1, "CAD") == "90,071,992,547,409.93 CAD"


def test_times_are_shown_in_the_display_time_zone() -> None:
    summer = datetime(2024, 7, 1, 16, 30, tzinfo=UTC)
    winter = datetime(2024, 1, 15, 5, 0, tzinfo=UTC)

    assert format_time(summer, "America/Toronto") == "2024-07-01 12:30:00 EDT"
    assert format_time(winter, "America/Toronto") == "2024-01-15 00:00:00 EST"
    assert format_time(winter, "America/Vancouver") == "2024-01-14 21:00:00 PST"
    assert format_time(None, "America/Toronto") == "—"
    # 03:00 UTC is still the previous day in Toronto: "today" follows the display zone.
    assert today("America/Toronto", datetime(2024, 5, 2, 3, 0, tzinfo=UTC)) == date(2024, 5, 1)


def test_ages_are_short_whole_units() -> None:
    assert format_age(timedelta(seconds=59)) == "0 min"
    assert format_age(timedelta(minutes=14, seconds=59)) == "14 min"
    assert format_age(timedelta(hours=2, minutes=5)) == "2 h 5 min"
    assert format_age(timedelta(days=3, hours=4, minutes=59)) == "3 d 4 h"


def test_chart_scales_bars_to_the_largest_day_and_fills_missing_days() -> None:
    start = date(2024, 5, 1)
    points = {start: DayPoint(start, 1000, 0), start + timedelta(days=2): DayPoint(start + timedelta(days=2), 500, 4)}

    chart = daily_chart(points, start, start + timedelta(days=3))

    assert [b.volume for b in chart.bars] == [1000, 0, 500, 0]
    tallest, empty, half = chart.bars[0], chart.bars[1], chart.bars[2]
    assert tallest.y + tallest.height == chart.baseline == half.y + half.height
    assert half.height == tallest.height // 2 and empty.height == 0
    assert half.dot_y < tallest.dot_y  # the only day with mismatches is the highest point of the line
    assert chart.line_points.count(",") == 4
    assert chart_start(start, start) == start - timedelta(days=13)


def test_chart_of_an_empty_range_is_flat() -> None:
    chart = daily_chart({}, date(2024, 5, 1), date(2024, 5, 31))

    assert len(chart.bars) == 31 and all(b.height == 0 and b.dot_y == chart.baseline for b in chart.bars)


def test_paging_cursor_round_trips_and_refuses_tampering() -> None:
    key = (date(2024, 5, 1), "QC00005496", "=ORDER,1")
    stamp = (datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), 42)

    assert paging.decode(paging.encode(key), (date, str, str)) == key
    assert paging.decode(paging.encode(stamp), (datetime, int)) == stamp
    assert paging.decode(None, (int,)) is None
    for bad in ("%%%", paging.encode((1, 2)), paging.encode(("2024-05-01T12:00:00", 1))):
        with pytest.raises(BadFilter):
            paging.decode(bad, (datetime, int))


def test_throttle_locks_a_user_after_repeated_failures_until_the_window_passes() -> None:
    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(USER_LIMIT):
        assert throttle.begin("ann", "10.0.0.1") == 0

    assert throttle.retry_after("ann", "10.0.0.2") == WINDOW_S
    assert throttle.retry_after("bob", "10.0.0.1") == 0
    now[0] += WINDOW_S + 1
    assert throttle.retry_after("ann", "10.0.0.1") == 0


def test_throttle_locks_an_address_guessing_many_users() -> None:
    throttle = LoginThrottle(clock=lambda: 0.0)
    for n in range(ADDRESS_LIMIT):
        assert throttle.begin(f"user{n}", "10.0.0.9") == 0

    assert throttle.retry_after("someone", "10.0.0.9") > 0
    assert throttle.retry_after("someone", "10.0.0.10") == 0


def test_throttle_counts_an_attempt_when_it_begins_and_takes_it_back_on_success() -> None:
    throttle = LoginThrottle(clock=lambda: 0.0)
    # Attempts begun together are all counted before any password check ends.
    started = [throttle.begin("ann", "10.0.0.1") for _ in range(USER_LIMIT + 3)]
    assert started.count(0) == USER_LIMIT
    locked = LoginThrottle(clock=lambda: 0.0)
    for n in range(ADDRESS_LIMIT - 1):
        locked.begin(f"user{n}", "10.0.0.9")
    # Right passwords do not use up the address's budget: their counts are taken back.
    for _ in range(5):
        assert locked.begin("good", "10.0.0.9") == 0
        locked.succeeded("good", "10.0.0.9")
    assert locked.retry_after("someone", "10.0.0.9") == 0
