"""The overview: a date range's totals per merchant and channel, statuses, money at risk, a daily chart."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ottrecon.console.charts import DayPoint, chart_start, daily_chart
from ottrecon.console.errors import BadFilter
from ottrecon.console.filters import date_range
from ottrecon.console.render import render
from ottrecon.console.web import pool, settings
from ottrecon.db import translate_errors
from ottrecon.reconciliation import overview_queries


async def show(request: web.Request) -> web.Response:
    """GET /console/ (?from=&to=): the day's (or range's) books at a glance."""
    problems: list[str] = []
    dates = date_range(request.query, settings(request).display_tz, problems)
    if problems:
        raise BadFilter(problems)
    start, end = dates.date_from, dates.date_to
    first_day = chart_start(start, end)
    async with translate_errors(), pool(request).acquire() as conn:
        totals = [dict(r) for r in await conn.fetch(overview_queries.TOTALS, start, end, None)]
        by_status = [dict(r) for r in await conn.fetch(overview_queries.BY_STATUS, start, end)]
        by_statement = [dict(r) for r in await conn.fetch(overview_queries.BY_STATEMENT, start, end)]
        daily = await conn.fetch(overview_queries.DAILY, first_day, end)
        open_alerts = await conn.fetchval(overview_queries.OPEN_ALERTS)
        adjustments = [dict(r) for r in await conn.fetch(overview_queries.ADJUSTMENTS_BOOKED, start, end)]
        closed_days = [dict(r) for r in await conn.fetch(overview_queries.CLOSED_DAYS, start, end)]
    points = {r["business_date"]: DayPoint(r["business_date"], r["volume"], r["mismatches"]) for r in daily}
    return render(
        request,
        "overview.html",
        active="overview",
        dates=dates,
        params=dates.params(),
        totals=totals,
        grand=_grand_total(totals),
        by_status=by_status,
        by_statement=by_statement,
        at_risk=sum(int(r["amount_at_risk"]) for r in totals),
        chart=daily_chart(points, first_day, end),
        open_alerts=open_alerts,
        adjustments=adjustments,
        closed_days=closed_days,
    )


def _grand_total(totals: list[dict[str, Any]]) -> dict[str, int]:
    names = ("payments", "gross", "tips", "refunds", "fees", "net")
    return {name: sum(int(row[name]) for row in totals) for name in names}
