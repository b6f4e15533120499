"""The ledger export's booked cells (closed_in, adjustments) against a reference written from decision 0031.

Generated book entries per key: closes and adjustments, some folded by a later close, entry numbers in a random
order of insertion, several keys of two merchants, rows without entries. The reference states the cells plainly:
closed_in is the distinct dates of the key's unfolded close entries, in date order, joined by ';'; adjustments is
each unfolded adjustment as "corrects DATE on DATE REASON net CENTS" in entry-number order, joined by ';'; either
is empty (NULL, an empty CSV cell) without such an entry. Both export paths are checked: the cursor statement's
values and the CSV that `export ledger` writes (COPY).
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ottrecon import db
from ottrecon.reconciliation.reports import EXPORT_LEDGER, LEDGER_EXPORT_COLUMNS, export_report
from tests.integration.model_world import scaled

EXAMPLES = scaled("OTTRECON_BOOKED_EXAMPLES", 40)
DAY = date(2024, 5, 1)
KEYS = [("M1", "A"), ("M1", "B"), ("M2", "A"), ("M2", "C")]
REASONS = ("late_callback", "late_refund", "statement_correction")


@dataclass(frozen=True)
class Entry:
    key: tuple[str, str]
    kind: str  # close | adjustment
    corrects: int  # days after DAY
    later: int  # adjustment: booked this many days after the date it corrects (at least 1)
    reason: str
    gross: int
    tips: int
    refunds: int
    fees: int
    folded: bool


ENTRIES = st.builds(
    Entry,
    key=st.sampled_from(KEYS),
    kind=st.sampled_from(("close", "adjustment")),
    corrects=st.integers(0, 4),
    later=st.integers(1, 3),
    reason=st.sampled_from(REASONS),
    gross=st.integers(-(10**9), 10**9),
    tips=st.integers(0, 10**6),
    refunds=st.integers(0, 10**9),
    fees=st.integers(0, 10**6),
    folded=st.booleans(),
)


def reference(entries: list[tuple[int, Entry]], key: tuple[str, str]) -> tuple[str, str]:
    """(closed_in, adjustments) of one key from (entry_no, entry) pairs; '' for none."""
    mine = sorted((n, e) for n, e in entries if e.key == key and not e.folded)
    closed = sorted({(DAY + timedelta(e.corrects)).isoformat() for _, e in mine if e.kind == "close"})
    adjustments = [
        f"corrects {DAY + timedelta(e.corrects)} on {DAY + timedelta(e.corrects + e.later)} {e.reason} "
        f"net {e.gross + e.tips - e.refunds - e.fees}"
        for _, e in mine
        if e.kind == "adjustment"
    ]
    return ";".join(closed), ";".join(adjustments)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=1) as created:
        yield created


async def store(conn: db.Connection, entries: list[tuple[int, Entry]]) -> None:
    await conn.execute("TRUNCATE ledger, book_entries, book_closes")
    await conn.executemany(
        "INSERT INTO ledger (merchant_id, order_id, business_date, recon_status) VALUES ($1, $2, $3, 'matched')",
        [(*key, DAY) for key in KEYS],
    )
    closes = {}
    for day in range(5):
        closes[day] = await conn.fetchval(
            "INSERT INTO book_closes (business_date, note, closed_by) VALUES ($1, 'test', 'test') RETURNING id",
            DAY + timedelta(day),
        )
    # What folds superseded entries: a close that was reopened (it no longer covers its date).
    folder = await conn.fetchval(
        "INSERT INTO book_closes (business_date, note, closed_by, reopened_at, reopened_by, reopen_reason)"
        " VALUES ($1, 'old', 'test', now(), 'test', 'test') RETURNING id",
        DAY,
    )
    await conn.executemany(
        """INSERT INTO book_entries (merchant_id, order_id, entry_no, kind, reason, close_id, corrects_date, booked_on,
                                     gross, tips, refunds, fees, folded_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
        [
            (
                *e.key,
                n,
                e.kind,
                e.reason if e.kind == "adjustment" else None,
                closes[e.corrects] if e.kind == "close" else None,
                DAY + timedelta(e.corrects),
                DAY + timedelta(e.corrects + (e.later if e.kind == "adjustment" else 0)),
                e.gross,
                e.tips,
                e.refunds,
                e.fees,
                folder if e.folded else None,
            )
            for n, e in entries
        ],
    )


@pytest.mark.timeout(max(120, EXAMPLES * 2))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=st.lists(ENTRIES, max_size=14), order=st.randoms(use_true_random=False))
async def test_booked_cells_match_the_reference_on_both_export_paths(
    pool: asyncpg.Pool, drawn: list[Entry], order: random.Random
) -> None:
    numbers = list(range(1, len(drawn) + 1))
    order.shuffle(numbers)  # entry numbers not in insertion order
    entries = list(zip(numbers, drawn, strict=True))
    async with pool.acquire() as conn:
        await store(conn, entries)
        rows = await conn.fetch(EXPORT_LEDGER, date.min, date.max, None)
    # By position: the statement's last two columns are closed_in and adjustments, whatever it names them.
    by_cursor = {(r[0], r[1]): (r[-2] or "", r[-1] or "") for r in rows}
    assert by_cursor == {key: reference(entries, key) for key in KEYS}
    out = io.StringIO()
    assert await export_report(pool, "ledger", out) == len(KEYS)
    lines = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(lines[0]) == list(LEDGER_EXPORT_COLUMNS)
    by_copy = {(r["merchant_id"], r["order_id"]): (r["closed_in"], r["adjustments"]) for r in lines}
    assert by_copy == by_cursor
