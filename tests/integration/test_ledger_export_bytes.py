"""`export ledger` through COPY (cells rendered by Postgres) writes the very bytes the cursor-and-csv.writer path
writes (write_csv over EXPORT_LEDGER), for any ledger content.

Hypothesis fills the ledger with every tricky value a cell can hold: commas, quotes, line feeds, carriage
returns, tabs, formula prefixes, empty texts, NULLs, non-ASCII and astral characters, negative and huge
integers, dates from year 1 to 9999, times with and without microseconds given in several zones; the
session runs in another time zone and date style than the export needs, to prove the export sets its own.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ottrecon.reconciliation.csv_writer import write_csv
from ottrecon.reconciliation.reports import EXPORT_LEDGER, LEDGER_EXPORT_COLUMNS, export_report
from tests.integration.model_world import scaled

EXAMPLES = scaled("OTTRECON_EXPORT_EXAMPLES", 60)
# Characters a spreadsheet, a CSV parser or an encoder could trip on, mixed into ordinary text.
TRICKY = [",", '"', "\n", "\r", "\r\n", "\t", "'", ";", "=", "+", "-", "@", " ", "é", "中文", "😀", "\\", "\\."]
TEXTS = st.one_of(
    st.lists(st.sampled_from([*TRICKY, "a", "B0001"]), max_size=4).map("".join),
    st.text(st.characters(codec="utf-8", blacklist_characters="\x00"), max_size=12),
)
RECON_STATUSES = ("matched", "amount_mismatch", "orphan_payment", "pending", "not_in_ledger", "unpaid")
ZONES = [UTC, ZoneInfo("America/Toronto"), ZoneInfo("Asia/Shanghai"), timezone(timedelta(hours=-3, minutes=-30))]
TIMES = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from(ZONES)
).map(lambda at: at if at.microsecond % 2 else at.replace(microsecond=0))
BIGINTS = st.integers(-(2**63), 2**63 - 1)
INSERT = f"""
INSERT INTO ledger (merchant_id, order_id, business_date, kind, channel, order_status, expected_amount, expected_tip,
                    received_amount, received_tip, refunded_amount, fee, channel_payment_ids, callback_count,
                    paid_source, recon_status, statement_status, statement_amount, statement_tip, statement_refund,
                    statement_import_ids, amount_at_risk, statement_amount_at_risk, created_at, paid_at)
VALUES ({", ".join(f"${n}" for n in range(1, 26))})
"""


@st.composite
def ledger_rows(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    rows = []
    merchants = draw(st.lists(TEXTS, min_size=1, max_size=3, unique=True))
    for n in range(draw(st.integers(1, 12))):
        optional_text = st.none() | TEXTS
        optional_int = st.none() | BIGINTS
        rows.append(
            (
                draw(st.sampled_from(merchants)),
                draw(TEXTS) + f"#{n}",  # unique within a merchant
                draw(st.dates(date(1, 1, 1), date(9999, 12, 31))),
                draw(optional_text),
                draw(optional_text),
                draw(optional_text),
                draw(optional_int),
                draw(optional_int),
                draw(optional_int),
                draw(optional_int),
                draw(BIGINTS),
                draw(BIGINTS),
                draw(st.lists(st.none() | TEXTS, max_size=3)),
                draw(st.integers(-(2**31), 2**31 - 1)),
                draw(optional_text),
                draw(st.sampled_from(RECON_STATUSES)),
                draw(optional_text),
                draw(optional_int),
                draw(optional_int),
                draw(optional_int),
                draw(st.lists(BIGINTS, max_size=3)),
                draw(BIGINTS),
                draw(BIGINTS),
                draw(st.none() | TIMES),
                draw(st.none() | TIMES),
            )
        )
    return rows


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    # Not the zone or date style the export writes in: the export must set what it depends on.
    session = {"TimeZone": "Asia/Kolkata", "DateStyle": "SQL, DMY"}
    async with asyncpg.create_pool(database_url, min_size=1, max_size=1, server_settings=session) as created:
        yield created


async def both(pool: asyncpg.Pool, **filters: Any) -> tuple[str, str]:
    """The ledger report as the cursor path writes it, and as export_report (COPY) writes it."""
    by_cursor, by_copy = io.StringIO(), io.StringIO()
    args = (filters.get("date_from", date.min), filters.get("date_to", date.max), filters.get("merchant_id"))
    rows = await write_csv(pool, by_cursor, LEDGER_EXPORT_COLUMNS, EXPORT_LEDGER, args, 3)
    assert await export_report(pool, "ledger", by_copy, **filters) == rows
    return by_cursor.getvalue(), by_copy.getvalue()


@pytest.mark.timeout(max(120, EXAMPLES))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ledger_rows())
async def test_copy_export_writes_the_bytes_the_cursor_export_writes(
    pool: asyncpg.Pool, rows: list[tuple[Any, ...]]
) -> None:
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE ledger")
        await conn.executemany(INSERT, rows)
    cursor_csv, copy_csv = await both(pool)
    assert copy_csv == cursor_csv
    assert copy_csv.count("\n") >= len(rows) + 1
    some = rows[0]
    filtered = await both(pool, date_from=some[2], date_to=some[2], merchant_id=some[0])
    assert filtered[1] == filtered[0]


async def test_every_tricky_value_at_once(pool: asyncpg.Pool) -> None:
    """One row per tricky text in every text column, and the time and number edges, deterministically."""
    at = datetime(2024, 5, 1, 23, 59, 59, 123456, tzinfo=ZoneInfo("America/Toronto"))
    rows = []
    for n, text in enumerate([*TRICKY, "", "'quoted'", "=SUM(A1)", "\r=1", "x\ry", "plain"]):
        times = (at, at.replace(microsecond=0)) if n % 2 else (None, datetime(1, 1, 1, tzinfo=UTC))
        rows.append(
            (text or "m", f"{text}{n}", date(2024, 5, 1 + n % 28), text, text, text, -(2**63), 2**63 - 1, None, 0, 0,
             -5, [text, None, "WX1"], n, text, "matched", text or None, None, None, None, [3, 1, 2], -1, 0, *times)
        )  # fmt: skip
    async with pool.acquire() as conn:
        await conn.executemany(INSERT, rows)
        # The infinities (asyncpg reads them as the naive datetime.max / datetime.min and date.max / date.min).
        await conn.execute("UPDATE ledger SET created_at = 'infinity', paid_at = '-infinity' WHERE callback_count = 1")
        await conn.execute("UPDATE ledger SET business_date = 'infinity' WHERE callback_count = 2")
        await conn.execute("UPDATE ledger SET business_date = '-infinity' WHERE callback_count = 3")
        # Where orders are booked (closed_in, adjustments): a close of one date, and adjustments of its orders
        # (negative nets included); the other rows have none.
        close_id = await conn.fetchval(
            "INSERT INTO book_closes (business_date, note, closed_by) VALUES ('2024-05-02', 'n', 'f') RETURNING id"
        )
        await conn.executemany(
            "INSERT INTO book_entries (merchant_id, order_id, entry_no, kind, reason, close_id, corrects_date,"
            " booked_on, gross, refunds) VALUES ($1, $2, $3, $4, $5, $6, '2024-05-02', $7, $8, $9)",
            [
                (rows[1][0], rows[1][1], 1, "close", None, close_id, date(2024, 5, 2), 500, 0),
                (rows[1][0], rows[1][1], 2, "adjustment", "late_refund", None, date(2024, 5, 3), 0, 700),
                (rows[1][0], rows[1][1], 3, "adjustment", "late_callback", None, date(2024, 5, 4), 300, 0),
                (rows[2][0], rows[2][1], 1, "adjustment", "statement_correction", None, date(2024, 5, 9), 1, 0),
            ],
        )
    cursor_csv, copy_csv = await both(pool)
    assert copy_csv == cursor_csv
    assert ",2024-05-02,corrects 2024-05-02 on 2024-05-03 late_refund net -700;corrects" in copy_csv
    assert "9999-12-31T23:59:59.999999," in copy_csv and ",0001-01-01," in copy_csv
    assert "'=SUM(A1)" in copy_csv and "x\ry" in copy_csv and "2024-05-02T03:59:59.123456+00:00" in copy_csv
