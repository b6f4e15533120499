"""OTT Pay finish times: zone-less is Beijing time, offsets and North American abbreviations are honoured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ottpay.messages import parse_finish_time

BEIJING = ZoneInfo("Asia/Shanghai")
TORONTO = ZoneInfo("America/Toronto")


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # PROTOCOL §4: the callback table's YYYYMMDDHHMMSS is Beijing time (UTC+8, no daylight saving).
        ("20200416050429", _utc(2020, 4, 15, 21, 4, 29)),
        ("20200116050429", _utc(2020, 1, 15, 21, 4, 29)),
        ("2023-03-23 01:21:53", _utc(2023, 3, 22, 17, 21, 53)),
        ("2024-01-08T16:29:03", _utc(2024, 1, 8, 8, 29, 3)),
        ("2024-01-08T16:29:03.250", datetime(2024, 1, 8, 8, 29, 3, 250000, tzinfo=UTC)),
        ("2024-01-08 16:29", _utc(2024, 1, 8, 8, 29, 0)),
        ("  20200416050429 \n", _utc(2020, 4, 15, 21, 4, 29)),
        # The English pages' abbreviations are North American: CST is US Central (UTC-6), not China.
        ("2024-01-08 16:29:03 CST", _utc(2024, 1, 8, 22, 29, 3)),
        ("2024-01-08 16:29:03 CDT", _utc(2024, 1, 8, 21, 29, 3)),
        ("2024-01-08 16:29:03 EST", _utc(2024, 1, 8, 21, 29, 3)),
        ("2024-07-08 16:29:03EDT", _utc(2024, 7, 8, 20, 29, 3)),
        # An abbreviation is the fixed offset it names, whatever the season.
        ("2024-07-08 16:29:03 EST", _utc(2024, 7, 8, 21, 29, 3)),
        ("2024-01-08 16:29:03 PST", _utc(2024, 1, 9, 0, 29, 3)),
        ("2024-01-08 16:29:03 NST", datetime(2024, 1, 8, 19, 59, 3, tzinfo=UTC)),
        ("2024-01-08 16:29:03 utc", _utc(2024, 1, 8, 16, 29, 3)),
        ("2024-01-08 16:29:03 GMT", _utc(2024, 1, 8, 16, 29, 3)),
        ("20240108162903 CST", _utc(2024, 1, 8, 22, 29, 3)),
        # Numeric offsets and Z are explicit.
        ("2024-01-08T16:29:03+08:00", _utc(2024, 1, 8, 8, 29, 3)),
        ("2024-01-08 16:29:03+0800", _utc(2024, 1, 8, 8, 29, 3)),
        ("2024-01-08 16:29:03 +08", _utc(2024, 1, 8, 8, 29, 3)),
        ("2024-01-08T16:29:03-05:00", _utc(2024, 1, 8, 21, 29, 3)),
        ("2024-01-08T16:29:03Z", _utc(2024, 1, 8, 16, 29, 3)),
    ],
)
def test_parse_finish_time_reads_each_documented_form_at_its_instant(raw: str, expected: datetime) -> None:
    parsed = parse_finish_time(raw)
    assert parsed is not None and parsed.utcoffset() is not None
    assert parsed == expected


def test_parse_finish_time_afternoon_in_beijing_is_the_same_toronto_morning() -> None:
    # The bug this guards against: read in Toronto, a 15:00 Beijing payment landed on the next business date.
    parsed = parse_finish_time("20240501150000")
    assert parsed is not None
    assert parsed.astimezone(TORONTO) == datetime(2024, 5, 1, 3, 0, tzinfo=TORONTO)


def test_parse_finish_time_default_tz_is_used_only_without_a_zone() -> None:
    assert parse_finish_time("2024-05-01 13:45:00", default_tz=TORONTO) == datetime(2024, 5, 1, 13, 45, tzinfo=TORONTO)
    assert parse_finish_time("2024-05-01 13:45:00 CST", default_tz=TORONTO) == _utc(2024, 5, 1, 19, 45, 0)
    assert parse_finish_time("2024-05-01T13:45:00+08:00", default_tz=TORONTO) == _utc(2024, 5, 1, 5, 45, 0)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "garbage",
        "CST",
        "0",
        "2024-01-08",
        "20240108",
        "16:29:03",
        "2020041605042",
        "202004160504299",
        "20201340050429",
        "2024-13-01 00:00:00",
        "2024-02-30 10:00:00",
        "2024-01-08 25:00:00",
        "2024-01-08 16:60:00",
        "2024-01-08 16:29:60",
        "0000-01-08 16:29:03",
        "2024-01-08 16:29:03 America/Toronto",
        "2024-01-08 16:29:03 CST+8",
        # Unknown or ambiguous abbreviations are not guessed at (BJT, JST, IST, …).
        "2024-01-08 16:29:03 BJT",
        "2024-01-08 16:29:03 IST",
        "2024-01-08 16:29:03 +25:00",
        "2024-01-08 16:29:03 +08:75",
        "2024-W02-1 16:29:03",
        "2024-01-08\t16:29:03",
        "\uff12\uff10\uff12\uff10-04-16 05:04:29",
        "1586995469",
        "yesterday at noon",
    ],
)
def test_parse_finish_time_anything_else_is_none(raw: str) -> None:
    assert parse_finish_time(raw) is None


def test_parse_finish_time_non_string_is_none() -> None:
    assert parse_finish_time(None) is None  # type: ignore[arg-type]
    assert parse_finish_time(20200416050429) is None  # type: ignore[arg-type]


# Any instant, written as OTT Pay writes it in Beijing time, reads back as that instant.
@given(st.datetimes(min_value=datetime(1992, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)))
def test_parse_finish_time_round_trips_beijing_wall_times(instant: datetime) -> None:
    instant = instant.replace(microsecond=0)
    wall = instant.astimezone(BEIJING)
    assert parse_finish_time(wall.strftime("%Y%m%d%H%M%S")) == instant
    assert parse_finish_time(wall.strftime("%Y-%m-%d %H:%M:%S")) == instant


@given(
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(9998, 12, 30)),
    st.sampled_from([("EST", -5), ("EDT", -4), ("CST", -6), ("CDT", -5), ("MST", -7), ("PDT", -7), ("UTC", 0)]),
)
def test_parse_finish_time_abbreviation_is_its_fixed_offset(wall: datetime, zone: tuple[str, int]) -> None:
    wall = wall.replace(microsecond=0)
    name, hours = zone
    expected = wall.replace(tzinfo=timezone(timedelta(hours=hours)))
    assert parse_finish_time(f"{wall:%Y-%m-%d %H:%M:%S} {name}") == expected
