"""The ledger page: filter by business dates, merchant, channel, status and order id; keyset pages; CSV."""

from __future__ import annotations

from datetime import date
from typing import TextIO

import asyncpg
from aiohttp import web

from ottrecon.console import csv_stream, paging
from ottrecon.console.filters import CHANNELS, RECON_STATUSES, LedgerFilter
from ottrecon.console.render import render
from ottrecon.console.web import database_url, pool, settings
from ottrecon.reconciliation import ledger_pages
from ottrecon.reconciliation.reports import export_report


async def show(request: web.Request) -> web.Response:
    """GET /console/ledger: one page of rows in report order; ?after= is the keyset cursor."""
    tz = settings(request).display_tz
    f = LedgerFilter.parse(request.query, tz)
    after = paging.decode(request.query.get("after"), (date, str, str))
    # One row more than shown tells whether a next page exists without counting millions of rows.
    rows = await ledger_pages.ledger_page(pool(request), f.selection(), after, paging.PAGE_SIZE + 1)
    more = len(rows) > paging.PAGE_SIZE
    rows = rows[: paging.PAGE_SIZE]
    next_cursor = paging.encode(ledger_pages.ledger_key(rows[-1])) if more else None
    return render(
        request,
        "ledger.html",
        active="ledger",
        f=f,
        params=f.params(),
        rows=rows,
        next_cursor=next_cursor,
        is_first_page=after is None,
        channels=CHANNELS,
        statuses=RECON_STATUSES,
    )


async def download(request: web.Request) -> web.StreamResponse:
    """GET /console/ledger.csv: exactly the filtered rows, in `ottrecon export ledger`'s format."""
    console = settings(request)
    f = LedgerFilter.parse(request.query, console.display_tz)
    name = f"ledger_{f.dates.date_from}_{f.dates.date_to}.csv"
    if f.report_filters_only:
        # What the CLI can express goes through the CLI's own code: identical bytes by construction.
        async def export(db: asyncpg.Pool, out: TextIO) -> int:
            dates = f.dates
            return await export_report(
                db, "ledger", out, date_from=dates.date_from, date_to=dates.date_to, merchant_id=f.merchant_id
            )

        return await csv_stream.stream_csv(request, name, database_url(request), export)
    query, args = ledger_pages.ledger_query(f.selection(), booked=True)
    return await csv_stream.stream_csv(
        request, name, database_url(request), lambda db, out: csv_stream.write_rows(db, out, query, args)
    )
