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

# Totals per merchant and channel, as the reports' summary defines them (net = gross + tips - refunds - fees):
# refunds on the dates they happened (ledger_refunds), fees of the payments we received (decision 0022).
TOTALS = """
SELECT merchant_id, channel, payments, gross, tips, refunds, fees, gross + tips - refunds - fees AS net
FROM (
    SELECT merchant_id, channel, sum(payments)::int8 AS payments, sum(gross)::int8 AS gross,
           sum(tips)::int8 AS tips, sum(refunds)::int8 AS refunds, sum(fees)::int8 AS fees
    FROM (
        SELECT l.merchant_id, l.channel,
               count(*) FILTER (WHERE l.received_amount IS NOT NULL) AS payments,
               coalesce(sum(l.received_amount), 0) AS gross,
               coalesce(sum(l.received_tip), 0) AS tips,
               0 AS refunds,
               coalesce(sum(l.fee) FILTER (WHERE l.received_amount IS NOT NULL), 0) AS fees
        FROM ledger l WHERE l.business_date BETWEEN $1 AND $2
        GROUP BY l.merchant_id, l.channel
        UNION ALL
        SELECT r.merchant_id, r.channel, 0, 0, 0, sum(r.amount), 0
        FROM ledger_refunds r WHERE r.business_date BETWEEN $1 AND $2
        GROUP BY r.merchant_id, r.channel
    ) parts
    GROUP BY merchant_id, channel
) t
ORDER BY merchant_id, channel NULLS LAST
"""
# Rows and money at risk per reconciliation status.
BY_STATUS = """
SELECT recon_status, count(*) AS n, coalesce(sum(amount_at_risk), 0)::int8 AS at_risk
FROM ledger WHERE business_date BETWEEN $1 AND $2
GROUP BY recon_status ORDER BY n DESC, recon_status
"""
# Rows per statement status (NULL: no imported statement covers them yet), with the money at stake.
BY_STATEMENT = """
SELECT statement_status, count(*) AS n, coalesce(sum(statement_amount_at_risk), 0)::int8 AS at_risk
FROM ledger WHERE business_date BETWEEN $1 AND $2
GROUP BY statement_status ORDER BY n DESC, statement_status NULLS LAST
"""
# Per business date: money received (amount + tip) and rows needing a person, for the chart.
DAILY = """
SELECT business_date,
       coalesce(sum(received_amount + coalesce(received_tip, 0)), 0)::int8 AS volume,
       count(*) FILTER (WHERE recon_status NOT IN ('matched', 'pending')
                        OR statement_status IN ('not_in_statement', 'not_in_ledger', 'amount_differs',
                                                'duplicate_settlement', 'refund_differs')) AS mismatches
FROM ledger WHERE business_date BETWEEN $1 AND $2
GROUP BY business_date
"""
OPEN_ALERTS = "SELECT count(*) FROM alerts WHERE status = 'open'"


async def show(request: web.Request) -> web.Response:
    """GET /console/ (?from=&to=): the day's (or range's) books at a glance."""
    problems: list[str] = []
    dates = date_range(request.query, settings(request).display_tz, problems)
    if problems:
        raise BadFilter(problems)
    start, end = dates.date_from, dates.date_to
    first_day = chart_start(start, end)
    async with translate_errors(), pool(request).acquire() as conn:
        totals = [dict(r) for r in await conn.fetch(TOTALS, start, end)]
        by_status = [dict(r) for r in await conn.fetch(BY_STATUS, start, end)]
        by_statement = [dict(r) for r in await conn.fetch(BY_STATEMENT, start, end)]
        daily = await conn.fetch(DAILY, first_day, end)
        open_alerts = await conn.fetchval(OPEN_ALERTS)
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
        at_risk=sum(r["at_risk"] for r in by_status) + sum(r["at_risk"] for r in by_statement),
        chart=daily_chart(points, first_day, end),
        open_alerts=open_alerts,
    )


def _grand_total(totals: list[dict[str, Any]]) -> dict[str, int]:
    names = ("payments", "gross", "tips", "refunds", "fees", "net")
    return {name: sum(int(row[name]) for row in totals) for name in names}
