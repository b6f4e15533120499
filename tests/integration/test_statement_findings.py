"""Statement findings, one example each (the model-based tests cover their combinations): a refund the
statement shows that we never made, a payment settled twice in one statement, and a month statement
correcting a daily one, which supersedes it, records where the values came from and clears the alert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ottrecon.reconciliation.layouts import ImportReport, StatementError, StatementLayout
from ottrecon.reconciliation.reconcile import reconcile_pending
from ottrecon.reconciliation.statements import import_statement
from tests.conftest import MERCHANT

HEADER = "merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n"
# PASSIVEPAY orders paid by their response, as the submitter records them (finish time in Beijing time).
PAID = """
WITH o AS (
    INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, auth_code, idempotency_key, request_sha256,
                        status, paid_amount, paid_source, paid_at)
    VALUES ($1, $2, 'PASSIVEPAY', 'ALIPAY', $3, '283456789012345678', $2, 'sha', 'paid', $3, 'response',
            '2024-05-01 16:00:00+00')
    RETURNING merchant_id, order_id, amount
)
INSERT INTO payments (merchant_id, order_id, status, amount, tip, bizpay_order_id, finish_time_raw, finish_time, source)
SELECT merchant_id, order_id, 'paid', amount, 0, 'AL' || order_id, '20240502000000', '2024-05-01 16:00:00+00',
       'response'
FROM o
"""


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as created:
        yield created


async def statement(pool: asyncpg.Pool, tmp_path: Path, name: str, lines: str, period: tuple[str, str]) -> ImportReport:
    path = tmp_path / name
    path.write_text(HEADER + lines)
    report = await import_statement(
        pool, path, StatementLayout(), period=(date.fromisoformat(period[0]), date.fromisoformat(period[1]))
    )
    await reconcile_pending(pool, business_tz="America/Toronto")
    return report


async def row(db: asyncpg.Connection, order_id: str) -> Any:
    return await db.fetchrow("SELECT * FROM ledger WHERE order_id = $1", order_id)


async def alerts(db: asyncpg.Connection, order_id: str) -> list[tuple[str, str, int]]:
    found = await db.fetch("SELECT kind, status, amount_at_risk FROM alerts WHERE order_id = $1 ORDER BY id", order_id)
    return [tuple(r.values()) for r in found]


async def test_a_refund_on_the_statement_that_we_never_made_is_refund_differs_with_its_risk_and_an_alert(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(PAID, MERCHANT, "RF1", 1000)

    await statement(
        pool,
        tmp_path,
        "d.csv",
        f"{MERCHANT},RF1,ALRF1,1000,0,20,400,2024-05-01 12:00:00\n",
        ("2024-05-01", "2024-05-01"),
    )

    found = await row(db, "RF1")
    assert (found["statement_status"], found["statement_refund"], found["statement_amount_at_risk"]) == (
        "refund_differs",
        400,
        400,
    )
    assert await alerts(db, "RF1") == [("statement_refund_differs", "open", 400)]


async def test_a_payment_settled_twice_in_one_statement_is_a_duplicate_settlement(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(PAID, MERCHANT, "DS1", 1500)
    twice = f"{MERCHANT},DS1,ALDS1,1500,0,30,0,2024-05-01 12:00:00\n" * 2

    report = await statement(pool, tmp_path, "d.csv", twice, ("2024-05-01", "2024-05-01"))

    assert (report.lines_stored, report.repeated_payments) == (2, 1)
    found = await row(db, "DS1")
    assert (found["statement_status"], found["statement_amount"], found["statement_amount_at_risk"]) == (
        "duplicate_settlement",
        3000,
        1500,
    )
    assert await alerts(db, "DS1") == [("duplicate_settlement", "open", 1500)]


async def test_a_month_statement_supersedes_the_daily_one_it_corrects(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(PAID, MERCHANT, "SU1", 1000)
    daily = await statement(
        pool,
        tmp_path,
        "daily.csv",
        f"{MERCHANT},SU1,ALSU1,900,0,18,0,2024-05-01 12:00:00\n",
        ("2024-05-01", "2024-05-01"),
    )
    assert (await row(db, "SU1"))["statement_status"] == "amount_differs"

    # The month statement states the payment correctly (the line an even earlier statement might have had).
    month = await statement(
        pool,
        tmp_path,
        "may.csv",
        f"{MERCHANT},SU1,ALSU1,1000,0,20,0,2024-05-01 12:00:00\n",
        ("2024-05-01", "2024-05-31"),
    )

    found = await row(db, "SU1")
    assert (found["statement_status"], found["statement_amount"], found["fee"]) == ("matched", 1000, 20)
    assert list(found["statement_import_ids"]) == [month.import_id] != [daily.import_id]
    assert await alerts(db, "SU1") == [("statement_amount_differs", "resolved", 100)]


async def test_a_later_statement_that_leaves_a_line_out_takes_it_back(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # A daily statement lists a payment nobody made; the month statement, covering that day, does not.
    await statement(
        pool,
        tmp_path,
        "daily.csv",
        f"{MERCHANT},GHOST1,ALG1,700,0,14,0,2024-05-03 12:00:00\n",
        ("2024-05-03", "2024-05-03"),
    )
    assert (await row(db, "GHOST1"))["recon_status"] == "not_in_ledger"

    await statement(
        pool,
        tmp_path,
        "may.csv",
        f"{MERCHANT},OTHER1,ALO1,100,0,2,0,2024-05-04 12:00:00\n",
        ("2024-05-01", "2024-05-31"),
    )

    assert await row(db, "GHOST1") is None  # only a superseded line ever knew it
    assert await alerts(db, "GHOST1") == [("not_in_ledger", "resolved", 700)]


async def test_a_statement_without_lines_for_its_merchant_finds_the_days_paid_orders_missing(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # Paid on May 1 (our side); the gateway's statement of May 1 for this merchant settled nothing at all.
    await db.execute(PAID, MERCHANT, "NS1", 1000)
    path = tmp_path / "quiet-day.csv"
    path.write_text(HEADER)
    may_1 = (date(2024, 5, 1), date(2024, 5, 1))

    # Before: a file without lines named no merchant, was stored covering nobody, and NS1 showed no finding.
    with pytest.raises(StatementError) as refused:
        await import_statement(pool, path, StatementLayout(), period=may_1)
    assert str(refused.value).startswith("no merchant:")
    assert await db.fetchval("SELECT count(*) FROM statement_imports") == 0

    report = await import_statement(pool, path, StatementLayout(), period=may_1, merchants=[MERCHANT])
    await reconcile_pending(pool, business_tz="America/Toronto")

    assert (report.lines_stored, report.merchant_ids) == (0, (MERCHANT,))
    found = await row(db, "NS1")
    assert (found["statement_status"], found["statement_amount_at_risk"]) == ("not_in_statement", 1000)
    assert ("not_in_statement", "open", 1000) in await alerts(db, "NS1")


async def test_a_statement_for_named_merchants_refuses_a_line_of_another(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(HEADER + f"{MERCHANT},M1,ALM1,1000,0,20,0,2024-05-01 12:00:00\nQC9,M2,ALM2,500,0,10,0,\n")

    with pytest.raises(StatementError) as refused:
        await import_statement(pool, path, StatementLayout(), period=(date(2024, 5, 1), date(2024, 5, 1)),
                               merchants=[MERCHANT])  # fmt: skip

    assert refused.value.problems == (f"line 3: merchant_id 'QC9' is not one of {MERCHANT}",)
    assert await db.fetchval("SELECT count(*) FROM statement_imports") == 0
    with pytest.raises(StatementError, match="invalid merchants"):
        await import_statement(pool, path, StatementLayout(), merchants=["QC1\x00"])
