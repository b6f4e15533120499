"""Ledger, summary and mismatch reports on real Postgres: exact rows, filters, cents, constant memory."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from ottpay.keys import MerchantKeys
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.verdicts import VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.payments.store import RECORD_ATTEMPT, RECORD_PAYMENT
from ottrecon.reconciliation.alerts import acknowledge, resolve
from ottrecon.reconciliation.layouts import StatementLayout
from ottrecon.reconciliation.reconcile import reconcile_pending
from ottrecon.reconciliation.reports import LEDGER_EXPORT_COLUMNS, MISMATCH_COLUMNS, SUMMARY_COLUMNS, export_report
from ottrecon.reconciliation.statements import import_statement
from tests.conftest import MERCHANT, OLD_KEY, OTHER_KEY, OTHER_MERCHANT
from tests.integration.support import make_callback

TORONTO = ZoneInfo("America/Toronto")
BEIJING = ZoneInfo("Asia/Shanghai")
MAY_1, MAY_2, MAY_3 = date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3)
ORPHAN = "=HYPERLINK(1)"  # an order id a spreadsheet would run as a formula
# An order as the API stores it, created at a given time, in the state the submission worker left it.
INSERT_ORDER = """
INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, tip, auth_code, idempotency_key, request_sha256,
                    status, paid_amount, paid_source, paid_at, unpaid_flagged_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $3 = 'PASSIVEPAY' THEN '283456789012345678' END, 'key-' || $2, 'sha', $7,
        $8, $9, $10, $11, $12, $12)
RETURNING id
"""
STATEMENT = """merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time
QC00005496,A1,ALA1,1000,100,22,0,2024-05-01 10:00:00
QC00005496,A2,WXA2,1990,0,40,0,2024-05-01 11:00:00
QC00005496,A4,ALA4,1500,50,31,0,2024-05-01 16:00:00
QC00005496,X1,WXX1,300,0,6,0,2024-05-02 13:00:00
"""


def toronto(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TORONTO)


def iso(at: datetime) -> str:
    """A timestamptz cell as the exports write it (asyncpg hands them back in UTC)."""
    return at.astimezone(UTC).isoformat()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as created:
        yield created


async def add_order(
    db: asyncpg.Connection,
    order_id: str,
    kind: str,
    channel: str,
    amount: int,
    created_at: datetime,
    *,
    tip: int = 0,
    status: str = "awaiting_payment",
    merchant_id: str = MERCHANT,
    paid_source: str | None = None,
    paid_at: datetime | None = None,
    flagged_at: datetime | None = None,
) -> int:
    paid_amount = amount if paid_source else None
    args = (merchant_id, order_id, kind, channel, amount, tip, status, paid_amount, paid_source, paid_at, flagged_at)
    order_pk: int = await db.fetchval(INSERT_ORDER, *args, created_at)
    return order_pk


async def callback(
    pool: asyncpg.Pool,
    merchants: MerchantKeys,
    order_id: str,
    amount: int,
    at: datetime,
    *,
    merchant_id: str = MERCHANT,
    tip: int = 0,
    channel_id: str | None = None,
) -> None:
    """A callback signed for real, verified and recorded by the worker's own code (callback, payment, order)."""
    key = OLD_KEY if merchant_id == MERCHANT else OTHER_KEY
    # OTT Pay writes finish_time in Beijing time (PROTOCOL.md section 4).
    fields = {"tip": str(tip), "finish_time": at.astimezone(BEIJING).strftime("%Y%m%d%H%M%S")}
    if channel_id:
        fields["bizpay_order_id"] = channel_id
    verdict = judge(make_callback(order_id, str(amount), merchant_id=merchant_id, key=key, **fields), at, merchants)
    assert isinstance(verdict, VerifiedCallback), verdict
    await callback_store.record(pool, [verdict], [])


@pytest.fixture
async def reconciled(
    pool: asyncpg.Pool, db: asyncpg.Connection, merchants: MerchantKeys, tmp_path: Path
) -> dict[str, int]:
    """Evidence of every kind over three days and two merchants, reconciled; returns the alert id per order.

    May 1 (QC): A1 and A4 paid by callback and on the statement; A2 paid 10 cents short (WeChat);
    P1 PASSIVEPAY paid by its response, missing from the statement (UnionPay); 200 of it refunded on May 2.
    May 2: U1 flagged unpaid and X1 only on the statement (QC); an orphan callback (other merchant).
    May 3: A3 paid (other merchant, no statement covers it); W1 still awaiting payment (QC).
    """
    for order_id, channel, amount, tip, hour in (("A1", "ALIPAY", 1000, 100, 10), ("A4", "ALIPAY", 1500, 50, 16)):
        await add_order(db, order_id, "ACTIVEPAY", channel, amount, toronto(MAY_1, hour - 1), tip=tip)
        await callback(pool, merchants, order_id, amount, toronto(MAY_1, hour), tip=tip)
    await add_order(db, "A2", "ACTIVEPAY", "WECHATPAY", 2000, toronto(MAY_1, 10, 55))
    await callback(pool, merchants, "A2", 1990, toronto(MAY_1, 11), channel_id="WXA2")

    # PASSIVEPAY: the response proved the payment (as the submission worker records it), then a refund.
    paid_at = toronto(MAY_1, 12)
    p1 = await add_order(
        db, "P1", "PASSIVEPAY", "UNIONPAY", 500, paid_at, status="paid", paid_source="response", paid_at=paid_at
    )
    trade_time = paid_at.astimezone(BEIJING)
    await db.execute(
        RECORD_PAYMENT, MERCHANT, "P1", 500, 0, "UPP1", f"{trade_time:%Y%m%d%H%M%S}", trade_time, "response"
    )
    reply = json.dumps({"bizpay_order_id": "UPP1", "order_status": "SUCCESS"})
    await db.execute(
        RECORD_ATTEMPT, p1, None, "PASSIVEPAY", "success", "SUCCESS", None, None, True, None, False, paid_at, 90, reply
    )
    await db.execute(
        "INSERT INTO refunds (order_ref, merchant_id, refund_order_id, amount, idempotency_key, request_sha256, status,"
        " succeeded_at) VALUES ($1, $2, 'RP1', 200, 'refund-1', 'sha', 'succeeded', $3)",
        p1,
        MERCHANT,
        toronto(MAY_2, 14),
    )
    await db.execute("UPDATE orders SET status = 'partially_refunded' WHERE id = $1", p1)

    flagged = toronto(MAY_2, 9, 15)
    await add_order(db, "U1", "ACTIVEPAY", "ALIPAY", 700, toronto(MAY_2, 9), status="unpaid", flagged_at=flagged)
    await callback(pool, merchants, ORPHAN, 450, toronto(MAY_2, 15), merchant_id=OTHER_MERCHANT)
    await add_order(db, "A3", "ACTIVEPAY", "ALIPAY", 800, toronto(MAY_3, 9, 58), merchant_id=OTHER_MERCHANT)
    await callback(pool, merchants, "A3", 800, toronto(MAY_3, 10), merchant_id=OTHER_MERCHANT)
    await add_order(db, "W1", "ACTIVEPAY", "ALIPAY", 900, toronto(MAY_3, 8))

    statement = tmp_path / "may.csv"
    statement.write_text(STATEMENT)
    await import_statement(pool, statement, StatementLayout(), period=(MAY_1, MAY_2))
    await reconcile_pending(pool, business_tz="America/Toronto")
    rows = await db.fetch("SELECT order_id, id FROM alerts")
    return {r["order_id"]: r["id"] for r in rows}


async def report(
    pool: asyncpg.Pool,
    what: str,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    merchant_id: str | None = None,
) -> list[dict[str, str]]:
    """The report as CSV text, parsed back; also checks the returned row count."""
    out = io.StringIO()
    count = await export_report(pool, what, out, date_from=date_from, date_to=date_to, merchant_id=merchant_id)
    out.seek(0)
    header, *rows = list(csv.reader(out))
    assert count == len(rows)
    return [dict(zip(header, row, strict=True)) for row in rows]


def pick(rows: list[dict[str, str]], *columns: str) -> list[tuple[str, ...]]:
    return [tuple(row[c] for c in columns) for row in rows]


async def test_ledger_report_has_every_row_in_key_order(pool: asyncpg.Pool, reconciled: dict[str, int]) -> None:
    rows = await report(pool, "ledger")

    assert tuple(rows[0]) == LEDGER_EXPORT_COLUMNS
    assert pick(rows, "business_date", "merchant_id", "order_id", "kind", "channel", "order_status") == [
        ("2024-05-01", MERCHANT, "A1", "ACTIVEPAY", "ALIPAY", "paid"),
        ("2024-05-01", MERCHANT, "A2", "ACTIVEPAY", "WECHATPAY", "paid"),
        ("2024-05-01", MERCHANT, "A4", "ACTIVEPAY", "ALIPAY", "paid"),
        ("2024-05-01", MERCHANT, "P1", "PASSIVEPAY", "UNIONPAY", "partially_refunded"),
        ("2024-05-02", OTHER_MERCHANT, "'" + ORPHAN, "", "ALIPAY", ""),  # neutralised for spreadsheets
        ("2024-05-02", MERCHANT, "U1", "ACTIVEPAY", "ALIPAY", "unpaid"),
        ("2024-05-02", MERCHANT, "X1", "", "WECHATPAY", ""),
        ("2024-05-03", OTHER_MERCHANT, "A3", "ACTIVEPAY", "ALIPAY", "paid"),
        ("2024-05-03", MERCHANT, "W1", "ACTIVEPAY", "ALIPAY", "awaiting_payment"),
    ]
    money = ("expected_amount", "expected_tip", "received_amount", "received_tip", "refunded_amount", "fee")
    evidence = ("channel_payment_ids", "callback_count", "paid_source", "recon_status", "statement_status")
    risk = ("statement_amount", "amount_at_risk", "statement_amount_at_risk")
    assert pick(rows, *money, *evidence, *risk) == [
        ("1000", "100", "1000", "100", "0", "22", "ALA1", "1", "callback", "matched", "matched", "1000", "0", "0"),
        ("2000", "0", "1990", "0", "0", "40", "WXA2", "1", "callback", "amount_mismatch", "matched", "1990", "10", "0"),
        ("1500", "50", "1500", "50", "0", "31", "ALA4", "1", "callback", "matched", "matched", "1500", "0", "0"),
        ("500", "0", "500", "0", "200", "0", "UPP1", "0", "response", "matched", "not_in_statement", "", "0", "500"),
        ("", "", "450", "0", "0", "0", "AL" + ORPHAN, "1", "callback", "orphan_payment", "", "", "450", "0"),
        ("700", "0", "", "", "0", "0", "", "0", "", "unpaid", "", "", "700", "0"),
        ("", "", "", "", "0", "6", "WXX1", "0", "", "not_in_ledger", "not_in_ledger", "300", "300", "0"),
        ("800", "0", "800", "0", "0", "0", "ALA3", "1", "callback", "matched", "", "", "0", "0"),
        ("900", "0", "", "", "0", "0", "", "0", "", "pending", "", "", "0", "0"),
    ]
    a1, u1, x1 = rows[0], rows[5], rows[6]
    assert (a1["created_at"], a1["paid_at"]) == (iso(toronto(MAY_1, 9)), iso(toronto(MAY_1, 10)))
    assert (u1["created_at"], u1["paid_at"], x1["created_at"]) == (iso(toronto(MAY_2, 9)), "", "")


async def test_ledger_report_small_fetch_size_streams_the_same_rows(
    pool: asyncpg.Pool, reconciled: dict[str, int]
) -> None:
    whole, chunked = io.StringIO(), io.StringIO()

    assert await export_report(pool, "ledger", whole) == 9
    assert await export_report(pool, "ledger", chunked, fetch_size=2) == 9
    assert chunked.getvalue() == whole.getvalue()


async def test_ledger_report_dates_and_merchant_filter_rows(pool: asyncpg.Pool, reconciled: dict[str, int]) -> None:
    one_day = await report(pool, "ledger", date_from=MAY_2, date_to=MAY_2)
    from_day = await report(pool, "ledger", date_from=MAY_2, merchant_id=MERCHANT)
    to_day = await report(pool, "ledger", date_to=MAY_1)
    other = await report(pool, "ledger", merchant_id=OTHER_MERCHANT)
    nobody = await report(pool, "ledger", merchant_id="NOBODY")

    assert pick(one_day, "order_id") == [("'" + ORPHAN,), ("U1",), ("X1",)]
    assert pick(from_day, "order_id") == [("U1",), ("X1",), ("W1",)]
    assert pick(to_day, "order_id") == [("A1",), ("A2",), ("A4",), ("P1",)]
    assert pick(other, "business_date", "order_id") == [("2024-05-02", "'" + ORPHAN), ("2024-05-03", "A3")]
    assert nobody == []


async def test_summary_report_adds_up_in_integer_cents(pool: asyncpg.Pool, reconciled: dict[str, int]) -> None:
    rows = await report(pool, "summary")
    qc_may_2 = await report(pool, "summary", date_from=MAY_2, date_to=MAY_2, merchant_id=MERCHANT)

    assert tuple(rows[0]) == SUMMARY_COLUMNS
    # payments, gross, tips, refunds, fees, net (= gross + tips - refunds - fees), mismatches, at risk, unpaid
    assert [tuple(row.values()) for row in rows] == [
        ("2024-05-01", MERCHANT, "ALIPAY", "2", "2500", "150", "0", "53", "2597", "0", "0", "0", "day", "", ""),
        ("2024-05-01", MERCHANT, "UNIONPAY", "1", "500", "0", "0", "0", "500", "1", "500", "0", "day", "", ""),
        ("2024-05-01", MERCHANT, "WECHATPAY", "1", "1990", "0", "0", "40", "1950", "1", "10", "0", "day", "", ""),
        ("2024-05-02", OTHER_MERCHANT, "ALIPAY", "1", "450", "0", "0", "0", "450", "1", "450", "0", "day", "", ""),
        ("2024-05-02", MERCHANT, "ALIPAY", "0", "0", "0", "0", "0", "0", "1", "700", "1", "day", "", ""),
        # P1's refund is booked on May 2, when it happened: May 1's summary stays as it was closed.
        ("2024-05-02", MERCHANT, "UNIONPAY", "0", "0", "0", "200", "0", "-200", "0", "0", "0", "day", "", ""),
        # Only on the statement: we received nothing, so its fee is not ours (it is in the 300 at risk).
        ("2024-05-02", MERCHANT, "WECHATPAY", "0", "0", "0", "0", "0", "0", "1", "300", "0", "day", "", ""),
        ("2024-05-03", OTHER_MERCHANT, "ALIPAY", "1", "800", "0", "0", "0", "800", "0", "0", "0", "day", "", ""),
        ("2024-05-03", MERCHANT, "ALIPAY", "0", "0", "0", "0", "0", "0", "0", "0", "0", "day", "", ""),
    ]
    assert qc_may_2 == rows[4:7]


async def test_mismatches_report_orders_by_risk_with_alert_status(
    pool: asyncpg.Pool, reconciled: dict[str, int]
) -> None:
    await acknowledge(pool, reconciled["U1"], actor="ana", note="calling the store")
    await resolve(pool, reconciled["A2"], actor="ana", note="customer paid the 10 cents in cash")

    rows = await report(pool, "mismatches")
    other = await report(pool, "mismatches", merchant_id=OTHER_MERCHANT)
    may_1 = await report(pool, "mismatches", date_from=MAY_1, date_to=MAY_1)

    assert tuple(rows[0]) == MISMATCH_COLUMNS
    assert pick(rows, "order_id", "recon_status", "statement_status", "amount_at_risk", "alert_status") == [
        ("U1", "unpaid", "", "700", "acknowledged"),
        ("P1", "matched", "not_in_statement", "0", "open"),
        ("'" + ORPHAN, "orphan_payment", "", "450", "open"),
        ("X1", "not_in_ledger", "not_in_ledger", "300", "open"),
        ("A2", "amount_mismatch", "matched", "10", "resolved"),  # resolved by hand: still a mismatch
    ]
    ledger_row = (await report(pool, "ledger"))[3]
    # The ledger export's columns and where the order is booked (nothing is closed here).
    assert (ledger_row.pop("closed_in"), ledger_row.pop("adjustments")) == ("", "")
    assert {k: v for k, v in rows[1].items() if k != "alert_status"} == ledger_row
    assert pick(other, "order_id") == [("'" + ORPHAN,)]
    assert pick(may_1, "order_id") == [("P1",), ("A2",)]


class CountingSink(io.StringIO):
    """A text stream that only counts what is written to it (holds nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


# 200k ledger rows as the reconciler writes them (inserted directly: this test is about the report's memory).
GENERATE_LEDGER = """
INSERT INTO ledger (merchant_id, order_id, kind, channel, order_status, expected_amount, expected_tip, received_amount,
                    received_tip, fee, channel_payment_ids, callback_count, paid_source, recon_status, statement_status,
                    statement_amount, created_at, paid_at, business_date)
SELECT 'QC0000549' || (i % 3), 'M' || lpad(i::text, 19, '0'), 'ACTIVEPAY', 'WECHATPAY', 'paid', 1000 + i, i % 100,
       1000 + i, i % 100, 20 + i % 7, ARRAY['WX' || lpad(i::text, 18, '0')], 1, 'callback', 'matched', 'matched',
       1000 + i, timestamptz '2024-05-01 08:00:00.123456+00' + make_interval(secs => i),
       timestamptz '2024-05-01 08:00:30.654321+00' + make_interval(secs => i), date '2024-05-01' + i % 30
FROM generate_series(1, $1::int) AS i
"""


@pytest.mark.timeout(180)
async def test_ledger_report_of_200k_rows_streams_in_constant_memory(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    rows = 200_000
    await db.execute(GENERATE_LEDGER, rows)
    sink = CountingSink()

    tracemalloc.start()
    try:
        written = await export_report(pool, "ledger", sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert written == rows
    # Holding the rows (a fetch() instead of a cursor) would need several hundred MB here.
    assert sink.chars > 30_000_000, sink.chars
    assert peak < 20_000_000, f"peak {peak / 1e6:.1f} MB for {sink.chars / 1e6:.1f} MB of CSV"


async def test_export_report_unknown_report_raises(pool: asyncpg.Pool) -> None:
    with pytest.raises(KeyError):
        await export_report(pool, "payments", io.StringIO())
