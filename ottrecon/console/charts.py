"""Server-rendered SVG chart geometry: daily volume bars with a mismatch line. Pure, no I/O.

The template draws what this computes; no JavaScript library, nothing fetched by the browser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 8, 8, 16, 28
# Weeks of context when the chosen range is shorter: one lone bar says little.
MIN_DAYS = 14


@dataclass(frozen=True)
class DayPoint:
    """One business date: money received (amount + tip, cents) and mismatching rows."""

    day: date
    volume: int
    mismatches: int


@dataclass(frozen=True)
class Bar:
    day: date
    volume: int
    mismatches: int
    x: int
    y: int
    width: int
    height: int
    dot_x: int
    dot_y: int
    label: bool  # whether this bar's date is written under the axis


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    baseline: int
    bars: tuple[Bar, ...]
    line_points: str
    max_volume: int
    max_mismatches: int
    date_from: date
    date_to: date


def chart_start(date_from: date, date_to: date) -> date:
    """The first date drawn: the range's start, or MIN_DAYS before its end if that is earlier."""
    return min(date_from, date_to - timedelta(days=MIN_DAYS - 1))


def daily_chart(points: Mapping[date, DayPoint], date_from: date, date_to: date) -> Chart:
    """Bars for every date in date_from..date_to (missing dates are zero), scaled to the largest day."""
    days = [date_from + timedelta(days=i) for i in range((date_to - date_from).days + 1)]
    series = [points.get(day) or DayPoint(day, 0, 0) for day in days]
    max_volume = max((p.volume for p in series), default=0)
    max_mismatches = max((p.mismatches for p in series), default=0)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w // len(series)
    bar_w = max(1, slot * 3 // 4)
    every = max(1, len(series) // 7)  # about seven date labels, whatever the range
    baseline = TOP + plot_h
    bars = []
    for i, p in enumerate(series):
        # Integer scaling: heights are whole pixels, and money never passes through a float.
        h = p.volume * plot_h // max_volume if max_volume else 0
        dot = p.mismatches * plot_h // max_mismatches if max_mismatches else 0
        x = LEFT + i * slot + (slot - bar_w) // 2
        bars.append(
            Bar(
                p.day,
                p.volume,
                p.mismatches,
                x,
                baseline - h,
                bar_w,
                h,
                x + bar_w // 2,
                baseline - dot,
                label=i % every == 0,
            )
        )
    line = " ".join(f"{b.dot_x},{b.dot_y}" for b in bars)
    return Chart(WIDTH, HEIGHT, baseline, tuple(bars), line, max_volume, max_mismatches, date_from, date_to)
