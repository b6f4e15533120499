"""Closing the books on the console: refused over unacknowledged mismatches (listed), forced with a reason,
adjustments on the overview and the order page, the printable close report, reopening; every change audited."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from ottpay.keys import MerchantKeys
from tests.conftest import MERCHANT
from tests.console.support import create_order, csrf_of, deliver, reconcile, sign_in, today


async def test_close_force_adjust_report_and_reopen_from_the_console(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys
) -> None:
    day = today() - timedelta(days=3)
    await create_order(db, "C1", 1000, age=timedelta(days=3))
    await deliver(pool, merchants, "C1", 1000, day)
    await create_order(db, "C2", 2000, age=timedelta(days=3))
    await deliver(pool, merchants, "C2", 1900, day)
    await create_order(db, "C3", 500, age=timedelta(days=3))
    await reconcile(pool)
    alert_id = await db.fetchval("SELECT id FROM alerts WHERE order_id = 'C2'")
    token = await sign_in(client, "fiona")

    refused = await client.post("/console/closes", data={"csrf_token": token, "date": str(day), "note": "reviewed"})
    page = unescape(await refused.text())
    assert refused.status == 409
    assert re.search(rf'data-test="refused-row"><td>{alert_id}</td><td>{day}</td><td>{MERCHANT}</td>', page), page
    assert await db.fetchval("SELECT count(*) FROM book_closes") == 0

    form = {"csrf_token": token, "date": str(day), "note": "reviewed", "force_reason": "C2 disputed with OTT Pay"}
    closed = await client.post("/console/closes", data=form)
    page = unescape(await closed.text())
    assert "Closed. Those dates are frozen" in page
    assert "forced over 1 open mismatch: C2 disputed with OTT Pay" in page
    assert await db.fetchval("SELECT closed_by FROM book_closes") == "fiona"

    # C3's payment, made on the closed day, is learned afterwards: an adjustment on the next day.
    await deliver(pool, merchants, "C3", 500, day)
    await reconcile(pool)
    span = f"from={day}&to={day + timedelta(days=1)}"
    overview = unescape(await (await client.get(f"/console/?{span}")).text())
    row = re.search(r'<tr data-test="adjustment-row">(.*?)</tr>', overview)
    assert row is not None, overview
    assert (
        f"<td>{day + timedelta(days=1)}</td><td>{MERCHANT}</td><td>ALIPAY</td><td>{day}</td><td>late callback</td>"
        in (row.group(1))
    )
    order = unescape(await (await client.get(f"/console/order?merchant_id={MERCHANT}&order_id=C3")).text())
    assert order.count('data-test="book-entry" data-kind="close"') == 1
    assert order.count('data-test="book-entry" data-kind="adjustment" data-folded="no"') == 1

    report = unescape(await (await client.get(f"/console/close-report?from={day}")).text())
    assert report.count('data-test="report-page"') == 1
    assert f'data-test="report-close" data-status="closed">{day} closed by <strong>fiona</strong>' in report
    assert 'data-test="report-mismatch" data-status="open"' in report and "carried open" in report
    assert report.count('data-test="report-adjustment"') == 1

    csrf = csrf_of(await (await client.get("/console/closes")).text())
    reopen = {"csrf_token": csrf, "date": str(day), "merchant_id": "", "reason": "fold C3 in"}
    reopened = unescape(await (await client.post("/console/closes/reopen", data=reopen)).text())
    assert "Reopened." in reopened and "by <strong>fiona</strong>" in reopened and "“fold C3 in”" in reopened
    assert await db.fetchval("SELECT reopen_reason FROM book_closes") == "fold C3 in"
    again = await client.post("/console/closes/reopen", data=reopen)
    assert again.status == 409
