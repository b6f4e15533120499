"""OTT Pay's finish_time (and trade_time, refund_time): lenient parsing into an instant. Pure.

PROTOCOL.md §4: a time without a zone is Beijing time (UTC+8); a trailing abbreviation on the
English pages is North American (`CST` there is US Central); numeric offsets are explicit.
The grammar is deliberately small and explicit, because sql/0008's `ottpay_parse_time` is its
SQL twin (used to recompute stored rows) and a property test holds the two to the same answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from types import MappingProxyType
from zoneinfo import ZoneInfo

BEIJING = ZoneInfo("Asia/Shanghai")


def _hours(hours: int, minutes: int = 0) -> timedelta:
    return timedelta(hours=hours, minutes=minutes if hours >= 0 else -minutes)


# Abbreviations accepted after a time, each the fixed offset its name says (EST is -05:00 even in
# July). North American names only, plus UTC/GMT: that is what OTT Pay's pages show. Anything
# else (BJT, IST, JST, …) is not guessed at: the time is unparseable and the receipt time is used.
ZONE_ABBREVIATIONS: Mapping[str, timedelta] = MappingProxyType(
    {
        "UTC": _hours(0),
        "GMT": _hours(0),
        "NST": _hours(-3, 30),
        "NDT": _hours(-2, 30),
        "AST": _hours(-4),
        "ADT": _hours(-3),
        "EST": _hours(-5),
        "EDT": _hours(-4),
        "CST": _hours(-6),
        "CDT": _hours(-5),
        "MST": _hours(-7),
        "MDT": _hours(-6),
        "PST": _hours(-8),
        "PDT": _hours(-7),
        "AKST": _hours(-9),
        "AKDT": _hours(-8),
        "HST": _hours(-10),
    }
)

# Whitespace stripped around the whole string; only spaces may separate a time from its zone.
_STRIP = " \t\n\r\x0b\x0c"
_COMPACT = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})(.*)", re.ASCII | re.DOTALL)
_DASHED = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,6}))?)?(.*)",
    re.ASCII | re.DOTALL,
)
_ZONE = re.compile(r" *(?:([+-])([0-9]{2})(?::?([0-9]{2}))?|(Z)|([A-Za-z]{2,5}))?", re.ASCII)


def parse_finish_time(raw: str, *, default_tz: tzinfo = BEIJING) -> datetime | None:
    """Parse an OTT Pay time into an aware datetime, or None when it is not one. Never raises.

    Accepted: `20200416050429`, `2023-03-23 01:21:53` (or with `T`, without seconds, with up to 6
    decimals), each optionally followed by a zone: `+08:00`/`+0800`/`+08`, `Z`, or an abbreviation
    from ZONE_ABBREVIATIONS (any case). Without a zone the wall time is in default_tz: Beijing for
    the gateway's own times; statements pass the business time zone. A date without a time is
    rejected. Use the result for display and reconciliation; business deadlines run on receipt time.
    """
    if not isinstance(raw, str) or not raw.isascii():
        return None
    if len(raw) == 14 and raw.isdigit():
        # The everyday form (20200416050429, every callback carries one): the same answer as the general parse,
        # at a third of its cost. tests/unit/test_fast_paths.py holds the two to each other.
        try:
            return datetime(
                int(raw[:4]),
                int(raw[4:6]),
                int(raw[6:8]),
                int(raw[8:10]),
                int(raw[10:12]),
                int(raw[12:]),
                tzinfo=default_tz,
            )
        except ValueError:
            return None
    return _parse_general(raw, default_tz)


def _parse_general(raw: str, default_tz: tzinfo) -> datetime | None:
    """parse_finish_time's grammar in full, for an ASCII string."""
    text = raw.strip(_STRIP)
    match = _COMPACT.fullmatch(text) or _DASHED.fullmatch(text)
    if match is None:
        return None
    groups = match.groups()
    year, month, day, hour, minute = (int(g) for g in groups[:5])
    if len(groups) == 7:  # compact: seconds always present, no fraction
        second, micro, rest = int(groups[5]), 0, groups[6]
    else:
        second = int(groups[5] or 0)
        micro, rest = int((groups[6] or "").ljust(6, "0")), groups[7]
    zone = _zone(rest, default_tz)
    if zone is None:
        return None
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=zone)
    except ValueError:  # month 13, February 30, hour 25, second 60, year 0, …
        return None


def _zone(text: str, default_tz: tzinfo) -> tzinfo | None:
    match = _ZONE.fullmatch(text)
    if match is None:
        return None
    sign, hours, minutes, utc, name = match.groups()
    if sign is not None:
        if int(hours) > 23 or int(minutes or 0) > 59:
            return None
        offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
        return timezone(-offset if sign == "-" else offset)
    if utc is not None:
        return UTC
    if name is not None:
        fixed = ZONE_ABBREVIATIONS.get(name.upper())
        return timezone(fixed) if fixed is not None else None
    return default_tz
