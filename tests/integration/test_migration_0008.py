"""Migration 0008 on a database written by the code before it: times recomputed, refunds dated, the queue kept,
every key queued, and the ledger rebuilt from it with Beijing finish times."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from importlib.resources import files
from pathlib import Path

import asyncpg
import pytest

from ottrecon.migrations import SQL_PACKAGE, migrate
from ottrecon.reconciliation.reconcile import reconcile_pending
from tests.conftest import MERCHANT, with_database

TORONTO_1500 = datetime(2024, 5, 2, 14, 0, tzinfo=UTC)  # 10:00 EDT: how the old code read "20240502100000"


@pytest.fixture
async def database_before_0008(admin_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database migrated by the real runner up to 0007 only, as production was before this change."""
    name = f"ottrecon_m7_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    old = tmp_path / "sql"
    old.mkdir()
    for path in files(SQL_PACKAGE).iterdir():
        if path.name.endswith(".sql") and path.name < "0008":
            (old / path.name).write_text(path.read_text())
    url = with_database(admin_url, name)
    await migrate(url, old)
    yield url
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def _old_rows(conn: asyncpg.Connection) -> None:
    """Rows as the code before 0008 wrote them: zone-less times read in Toronto, a CST suffix ignored."""
    order = """
    INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, idempotency_key, request_sha256, status,
                        paid_amount, paid_source, paid_at, created_at)
    VALUES ($1, $2, 'ACTIVEPAY', 'ALIPAY', 1000, $2, 'sha', 'paid', 1000, $3, $4, $4) RETURNING id
    """
    await conn.fetchval(order, MERCHANT, "CB1", "callback", datetime(2024, 5, 2, 2, 1, tzinfo=UTC))
    query_pk = await conn.fetchval(order, MERCHANT, "Q1", "query", datetime(2024, 5, 2, 2, 0, tzinfo=UTC))
    payment = """
    INSERT INTO payments (merchant_id, order_id, status, amount, tip, bizpay_order_id, finish_time_raw, finish_time,
                          source)
    VALUES ($1, $2, 'paid', 1000, 0, $3, $4, $5, $6)
    """
    # Beijing 10:00 on May 2 is 22:00 on May 1 in Toronto; the old reading put it on May 2.
    await conn.execute(payment, MERCHANT, "CB1", "AL1", "20240502100000", TORONTO_1500, "callback")
    # A status query's trade_time was kept raw and never parsed.
    await conn.execute(payment, MERCHANT, "Q1", "AL2", "20240502093000", None, "query")
    refund = """
    INSERT INTO refunds (order_ref, merchant_id, refund_order_id, amount, idempotency_key, request_sha256, status,
                         updated_at)
    VALUES ($1, $2, $3, 100, $3, 'sha', 'succeeded', $4) RETURNING id
    """
    dated = await conn.fetchval(refund, query_pk, MERCHANT, "R1", datetime(2024, 5, 9, tzinfo=UTC))
    await conn.fetchval(refund, query_pk, MERCHANT, "R2", datetime(2024, 5, 10, 12, tzinfo=UTC))
    await conn.execute(
        "INSERT INTO submission_attempts (order_ref, refund_ref, action, outcome, sent, started_at, latency_ms, data)"
        " VALUES ($1, $2, 'REFUND', 'success', true, now(), 5, $3)",
        query_pk,
        dated,
        '{"refund_time": "20240503090000", "refund_amount": "100"}',
    )
    await conn.execute(
        "INSERT INTO statement_imports (file_name, file_sha256, period_start, period_end, merchant_ids, line_count)"
        " VALUES ('may.csv', 'x', '2024-05-01', '2024-05-02', ARRAY[$1], 2)",
        MERCHANT,
    )
    line = """
    INSERT INTO statement_lines (import_id, line_no, merchant_id, order_id, bizpay_order_id, amount, txn_time_raw,
                                 txn_time, business_date, line_sha256)
    VALUES (1, $1, $2, $3, $4, 1000, $5, $6, $7, $3)
    """
    # "CST" was ignored: 23:30 read as Toronto wall time (EDT). It is US Central: 01:30 EDT on May 2.
    central = datetime(2024, 5, 2, 3, 30, tzinfo=UTC)
    await conn.execute(line, 2, MERCHANT, "CB1", "AL1", "2024-05-01 23:30:00 CST", central, date(2024, 5, 1))
    toronto = datetime(2024, 5, 1, 16, 0, tzinfo=UTC)
    await conn.execute(line, 3, MERCHANT, "Q1", "AL2", "2024-05-01 12:00:00", toronto, date(2024, 5, 1))


async def test_0008_recomputes_stored_times_dates_refunds_and_queues_every_key(database_before_0008: str) -> None:
    conn = await asyncpg.connect(database_before_0008)
    try:
        await _old_rows(conn)
        queued_before = await conn.fetch("SELECT merchant_id, order_id FROM recon_dirty")

        applied = await migrate(database_before_0008)

        assert [m.version for m in applied][:1] == [8]  # and whatever later migrations exist
        times = {row[0]: row[1] for row in await conn.fetch("SELECT order_id, finish_time FROM payments")}
        assert times == {
            "CB1": datetime(2024, 5, 2, 2, 0, tzinfo=UTC),  # 10:00 Beijing
            "Q1": datetime(2024, 5, 2, 1, 30, tzinfo=UTC),
        }
        lines = {
            r["line_no"]: (r["txn_time"], r["business_date"]) for r in await conn.fetch("SELECT * FROM statement_lines")
        }
        assert lines == {
            2: (datetime(2024, 5, 2, 5, 30, tzinfo=UTC), date(2024, 5, 2)),
            3: (datetime(2024, 5, 1, 16, 0, tzinfo=UTC), date(2024, 5, 1)),  # zone-less: read as before
        }
        refunds = {row[0]: row[1] for row in await conn.fetch("SELECT refund_order_id, succeeded_at FROM refunds")}
        assert refunds == {
            "R1": datetime(2024, 5, 3, 1, 0, tzinfo=UTC),  # the gateway's refund_time, Beijing time
            "R2": datetime(2024, 5, 10, 12, tzinfo=UTC),  # no answer kept: when we learned it
        }
        queued = {tuple(r) for r in await conn.fetch("SELECT merchant_id, order_id FROM recon_dirty")}
        assert queued == {(MERCHANT, "CB1"), (MERCHANT, "Q1")} and len(queued_before) > 0

        pool = await asyncpg.create_pool(database_before_0008, min_size=1, max_size=1)
        try:
            await reconcile_pending(pool, business_tz="America/Toronto")
        finally:
            await pool.close()
        ledger = {r["order_id"]: r for r in await conn.fetch("SELECT * FROM ledger")}
        assert ledger["CB1"]["business_date"] == date(2024, 5, 1)  # was May 2 under the Toronto reading
        assert ledger["Q1"]["business_date"] == date(2024, 5, 1)
        # The statement line dated May 2 now: the May 1-2 statement still covers it, and it still matches.
        assert ledger["CB1"]["statement_status"] == "matched"
        booked = {
            row[0]: row[1] for row in await conn.fetch("SELECT refund_order_id, business_date FROM ledger_refunds")
        }
        assert booked == {"R1": date(2024, 5, 2), "R2": date(2024, 5, 10)}
        assert await conn.fetchval("SELECT count(*) FROM recon_dirty") == 0
    finally:
        await conn.close()
