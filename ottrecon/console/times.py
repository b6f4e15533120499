"""Times and dates on the console's pages, in the display time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo


def format_time(at: datetime | None, tz: str) -> str:
    """'2024-05-01 09:45:00 EDT' in the display zone; '—' when absent. Naive times are taken as UTC."""
    if at is None:
        return "—"
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def today(tz: str, now: datetime | None = None) -> date:
    """The calendar date in the display zone (the default date range of the pages)."""
    return (now or datetime.now(UTC)).astimezone(ZoneInfo(tz)).date()


def format_age(delta: timedelta) -> str:
    """A short age like '3 d 4 h', '2 h 5 min', '7 min' (whole units, rounded down)."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"
