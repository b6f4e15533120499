"""The overview: totals per merchant and channel, statuses, money at risk and the daily SVG chart."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from ottpay.keys import MerchantKeys
from ottrecon.reconciliation.reports import export_report
from tests.console.support import create_order, deliver, reconcile, sign_in, today


async def day_of_business(db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys) -> None:
    """Today: an Alipay payment of 10.00 + 1.00 tip refunded 4.00, a WeChat payment of 20.00, one paid 9.00
    for a 10.00 order (amount mismatch), and yesterday a 5.00 payment."""
    ali = await create_order(db, "OVA", 1000, tip=100)
    await deliver(pool, merchants, "OVA", 1000, today(), tip="100")
    await db.execute(
        "INSERT INTO refunds (order_ref, merchant_id, refund_order_id, amount, idempotency_key, request_sha256, "
        "status, succeeded_at) VALUES ($1, 'QC00005496', 'R1', 400, 'r1', 'sha', 'succeeded', now())",
        ali,
    )
    await create_order(db, "OVW", 2000, biz_type="WECHATPAY")
    await deliver(pool, merchants, "OVW", 2000, today(), bizpay_order_id="WXOVW")
    await create_order(db, "OVM", 1000)
    await deliver(pool, merchants, "OVM", 900, today())
    await create_order(db, "OVY", 500)
    await deliver(pool, merchants, "OVY", 500, today() - timedelta(days=1))
    await reconcile(pool)


def cents(html: str, test: str) -> int:
    found = re.search(rf'data-cents="(-?\d+)" data-test="{test}"', html)
    assert found is not None, test
    return int(found.group(1))


async def test_overview_totals_statuses_and_risk_for_today(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys
) -> None:
    await day_of_business(db, pool, merchants)
    await sign_in(client, "victor")

    html = await (await client.get("/console/")).text()
    rows = re.findall(r'data-test="totals-row" data-merchant="([^"]+)" data-channel="([^"]*)"', html)
    statuses = dict(
        re.findall(r'data-test="status-row" data-status="([a-z_]+)">.*?data-test="status-count">(\d+)<', html)
    )

    assert rows == [("QC00005496", "ALIPAY"), ("QC00005496", "WECHATPAY")]
    # Gross 10.00 + 9.00 + 20.00, tips 1.00, refunds 4.00: net 36.00. Yesterday's 5.00 is not in it.
    assert cents(html, "total-gross") == 3900
    assert cents(html, "total-net") == 3600
    assert cents(html, "amount-at-risk") == 100
    assert statuses == {"matched": "2", "amount_mismatch": "1"}
    assert "-4.00 CAD" in html and 'class="money negative"' in html


async def test_overview_chart_has_one_bar_per_day_with_volume_and_mismatches(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys
) -> None:
    await day_of_business(db, pool, merchants)
    await sign_in(client, "victor")
    yesterday = (today() - timedelta(days=1)).isoformat()

    html = await (await client.get(f"/console/?from={yesterday}")).text()
    bars = re.findall(r'data-test="chart-bar" data-date="([^"]+)" data-cents="(\d+)" data-mismatches="(\d+)"', html)

    assert '<svg id="daily-chart"' in html and "<script" not in html
    assert len(bars) == 14  # a short range is drawn with two weeks of context
    assert bars[-2:] == [(yesterday, "500", "0"), (today().isoformat(), "4000", "1")]
    assert cents(html, "total-gross") == 4400


async def test_overview_without_ledger_rows_says_what_to_do(client: TestClient[Any, Any]) -> None:
    await sign_in(client, "victor")

    html = await (await client.get("/console/?from=2001-01-01&to=2001-01-31")).text()

    assert 'data-test="empty-totals"' in html
    assert "Pick another date range" in html
    assert len(re.findall(r'data-test="chart-bar"', html)) == 31


async def test_overview_and_the_summary_export_share_one_formula(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys
) -> None:
    # What finance downloads (`ottrecon export summary`) and what the overview shows for the same days must agree:
    # gross, net and the amount at risk, the statement's differences included.
    await day_of_business(db, pool, merchants)
    await db.execute("UPDATE ledger SET statement_status = 'not_in_statement', statement_amount_at_risk = 2000 "
                     "WHERE order_id = 'OVW'")  # fmt: skip
    await sign_in(client, "victor")
    start = today() - timedelta(days=1)
    html = await (await client.get(f"/console/?from={start}&to={today()}")).text()
    out = io.StringIO()
    await export_report(pool, "summary", out, date_from=start, date_to=today())
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))

    assert len(rows) >= 3  # two channels today, one yesterday
    for column, tile in (("gross", "total-gross"), ("net", "total-net"), ("amount_at_risk", "amount-at-risk")):
        assert cents(html, tile) == sum(int(row[column]) for row in rows), column
    assert cents(html, "amount-at-risk") == 100 + 2000
