"""Closing the books on real Postgres: a closed day's summary survives late evidence, adjustments book the change.

Evidence goes in through the worker's own code (callbacks signed, verified and recorded; statements imported)
and out through `ottrecon export summary`'s query; the reconciler books adjustments (decision 0031).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import asyncpg
import pytest

from ottpay.keys import MerchantKeys
from ottrecon.reconciliation import books_lock, closing
from ottrecon.reconciliation.alerts import acknowledge
from ottrecon.reconciliation.csv_writer import write_csv
from ottrecon.reconciliation.layouts import StatementLayout
from ottrecon.reconciliation.reconcile import mark_all_dirty, reconcile_pending
from ottrecon.reconciliation.reports import EXPORT_LEDGER, LEDGER_EXPORT_COLUMNS, export_report
from ottrecon.reconciliation.statements import import_statement
from tests.conftest import MERCHANT, OTHER_MERCHANT
from tests.integration.test_reports import add_order, callback, toronto

MAY_1, MAY_2, MAY_3 = date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3)
TODAY = date(2024, 6, 1)
TZ = "America/Toronto"
AMOUNTS = ("payments", "gross", "tips", "refunds", "fees", "net", "mismatches", "amount_at_risk", "unpaid")
STATEMENT = """merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time
QC00005496,A1,ALA1,1000,100,22,0,2024-05-01 10:00:00
QC00005496,A2,WXA2,2000,0,40,0,2024-05-01 11:00:00
"""
# OTT Pay corrects May 1: A2's fee was 45, not 40.
CORRECTED = """merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time
QC00005496,A1,ALA1,1000,100,22,0,2024-05-01 10:00:00
QC00005496,A2,WXA2,2000,0,45,0,2024-05-01 11:00:00
"""


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as created:
        yield created


async def summary(pool: asyncpg.Pool, day: date | None = None) -> list[dict[str, str]]:
    out = io.StringIO()
    await export_report(pool, "summary", out, date_from=day, date_to=day)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


def totals(rows: list[dict[str, str]]) -> dict[tuple[str, str], Counter[str]]:
    """Every figure added up per merchant and channel, over every date and entry."""
    found: dict[tuple[str, str], Counter[str]] = {}
    for row in rows:
        found.setdefault((row["merchant_id"], row["channel"]), Counter()).update(
            {name: int(row[name]) for name in AMOUNTS}
        )
    return found


async def reconcile(pool: asyncpg.Pool) -> None:
    await reconcile_pending(pool, business_tz=TZ)


@pytest.fixture
async def may_1(pool: asyncpg.Pool, db: asyncpg.Connection, merchants: MerchantKeys, tmp_path: Path) -> Path:
    """May 1: A1 paid and settled; A2 paid and settled (WeChat); A5 created, no word from the gateway yet;
    another merchant's B1 paid. Reconciled, every alert acknowledged. Returns a directory for statements."""
    await add_order(db, "A1", "ACTIVEPAY", "ALIPAY", 1000, toronto(MAY_1, 9), tip=100)
    await callback(pool, merchants, "A1", 1000, toronto(MAY_1, 10), tip=100, channel_id="ALA1")
    await add_order(db, "A2", "ACTIVEPAY", "WECHATPAY", 2000, toronto(MAY_1, 10, 55))
    await callback(pool, merchants, "A2", 2000, toronto(MAY_1, 11), channel_id="WXA2")
    await add_order(db, "A5", "ACTIVEPAY", "ALIPAY", 700, toronto(MAY_1, 15))
    await add_order(db, "B1", "ACTIVEPAY", "ALIPAY", 300, toronto(MAY_1, 12), merchant_id=OTHER_MERCHANT)
    await callback(pool, merchants, "B1", 300, toronto(MAY_1, 12, 5), merchant_id=OTHER_MERCHANT)
    (tmp_path / "may-1.csv").write_text(STATEMENT)
    await import_statement(pool, tmp_path / "may-1.csv", StatementLayout(), business_tz=TZ, period=(MAY_1, MAY_1))
    await reconcile(pool)
    return tmp_path


async def test_close_refuses_while_mismatches_are_unacknowledged_and_lists_them(
    pool: asyncpg.Pool, db: asyncpg.Connection, merchants: MerchantKeys, may_1: Path
) -> None:
    # A second callback for A2 says 19.90 of its 20.00: a mismatch nobody acknowledged (QC's statement
    # covers only QC, so the other merchant's B1 has nothing open).
    await callback(pool, merchants, "A2", 1990, toronto(MAY_1, 11, 1), channel_id="WXA2")
    await reconcile(pool)
    alert_id = await db.fetchval("SELECT id FROM alerts WHERE order_id = 'A2' AND status = 'open'")

    with pytest.raises(closing.UnacknowledgedMismatches) as refused:
        await closing.close_dates(pool, MAY_1, MAY_1, merchant_id=None, note="May 1", actor="ana", today=TODAY)

    assert [(m.alert_id, m.order_id, m.kind, m.business_date) for m in refused.value.mismatches] == [
        (alert_id, "A2", "amount_mismatch", MAY_1)
    ]
    assert await db.fetchval("SELECT count(*) FROM book_closes") == 0
    # The other merchant's day has nothing open: it closes on its own.
    other = await closing.close_dates(
        pool, MAY_1, MAY_1, merchant_id=OTHER_MERCHANT, note="B's May 1", actor="ana", today=TODAY
    )
    assert other.closed == [MAY_1]
    forced = await closing.close_dates(
        pool, MAY_1, MAY_1, merchant_id=MERCHANT, note="QC May 1", actor="bo", today=TODAY, force_reason="CFO ok"
    )
    assert (forced.closed, [m.alert_id for m in forced.forced_over]) == ([MAY_1], [alert_id])
    listed = await closing.list_closes(pool)
    assert [(c.merchant_id, c.closed_by, c.forced, c.force_reason, c.open_mismatches) for c in listed] == [
        (MERCHANT, "bo", True, "CFO ok", 1),
        (OTHER_MERCHANT, "ana", False, None, 0),
    ]
    # A close of every merchant on top of merchants' own closes is refused, not silently doubled.
    with pytest.raises(closing.ClosingError, match="closed separately"):
        await closing.close_dates(pool, MAY_1, MAY_1, merchant_id=None, note="all", actor="ana", today=TODAY)


async def test_close_refuses_a_day_not_over_and_skips_a_day_already_closed(pool: asyncpg.Pool, may_1: Path) -> None:
    with pytest.raises(closing.ClosingError, match="not over yet"):
        await closing.close_dates(pool, MAY_1, MAY_1, merchant_id=None, note="early", actor="ana", today=MAY_1)
    first = await closing.close_dates(pool, MAY_1, MAY_2, merchant_id=None, note="n", actor="ana", today=TODAY)
    again = await closing.close_dates(pool, MAY_1, MAY_3, merchant_id=None, note="n", actor="ana", today=TODAY)
    assert (first.closed, first.already_closed) == ([MAY_1, MAY_2], [])
    assert (again.closed, again.already_closed) == ([MAY_3], [MAY_1, MAY_2])


async def test_a_closed_day_survives_a_late_callback_a_late_refund_and_a_corrected_statement(
    pool: asyncpg.Pool, db: asyncpg.Connection, merchants: MerchantKeys, may_1: Path
) -> None:
    before = await summary(pool)
    await closing.close_dates(pool, MAY_1, MAY_1, merchant_id=None, note="May 1 signed off", actor="ana", today=TODAY)
    frozen = await summary(pool, MAY_1)
    assert frozen == [row for row in before if row["business_date"] == str(MAY_1)]

    # A late callback: A5 was paid on May 1 at 15:02; the gateway's word arrives on May 2.
    await callback(pool, merchants, "A5", 700, toronto(MAY_1, 15, 2), channel_id="ALA5")
    await reconcile(pool)
    assert await summary(pool, MAY_1) == frozen
    # A late refund: 100 of A1 refunded at 23:30 on May 1 (the gateway's refund_time), learned on May 2.
    a1 = await db.fetchval("SELECT id FROM orders WHERE order_id = 'A1'")
    await db.execute(
        "INSERT INTO refunds (order_ref, merchant_id, refund_order_id, amount, idempotency_key, request_sha256, status,"
        " succeeded_at) VALUES ($1, $2, 'RA1', 100, 'refund-a1', 'sha', 'succeeded', $3)",
        a1,
        MERCHANT,
        toronto(MAY_1, 23, 30),
    )
    await reconcile(pool)
    assert await summary(pool, MAY_1) == frozen
    # A corrected statement: A2's fee was 45.
    (may_1 / "may-1-corrected.csv").write_text(CORRECTED)
    await import_statement(
        pool, may_1 / "may-1-corrected.csv", StatementLayout(), business_tz=TZ, period=(MAY_1, MAY_1)
    )
    await reconcile(pool)
    assert await summary(pool, MAY_1) == frozen

    adjustments = [r for r in await summary(pool, MAY_2) if r["entry"] == "adjustment"]
    assert [(r["channel"], r["corrects_date"], r["reason"], r["payments"], r["gross"], r["refunds"], r["fees"],
             r["net"]) for r in adjustments] == [
        ("ALIPAY", "2024-05-01", "late_callback", "1", "700", "0", "0", "700"),
        ("ALIPAY", "2024-05-01", "late_refund", "0", "0", "100", "0", "-100"),
        ("WECHATPAY", "2024-05-01", "statement_correction", "0", "0", "0", "5", "-5"),
    ]  # fmt: skip
    # Cent for cent: every date with its adjustments adds up to the live truth, which reopening shows.
    closed_books = totals(await summary(pool))
    await closing.reopen_date(pool, MAY_1, merchant_id=None, reason="auditor asked", actor="bo")
    live = await summary(pool)
    assert totals(live) == closed_books
    assert [r for r in live if r["entry"] == "adjustment"] == []


async def test_adjustments_are_booked_once_however_often_the_keys_are_reconciled(
    pool: asyncpg.Pool, db: asyncpg.Connection, merchants: MerchantKeys, may_1: Path
) -> None:
    await closing.close_dates(pool, MAY_1, MAY_1, merchant_id=None, note="n", actor="ana", today=TODAY)
    await callback(pool, merchants, "A5", 700, toronto(MAY_1, 15, 2), channel_id="ALA5")
    await reconcile(pool)
    entries = await db.fetch("SELECT * FROM book_entries ORDER BY id")
    # At least once: the whole ledger again, twice, and two reconcilers at once.
    for _ in range(2):
        await mark_all_dirty(pool)
        await asyncio.gather(reconcile(pool), reconcile(pool))
    assert await db.fetch("SELECT * FROM book_entries ORDER BY id") == entries
    assert [e["kind"] for e in entries].count("adjustment") == 1


async def test_an_adjustment_lands_on_the_first_open_date_and_blocks_reopening_until_that_date_reopens(
    pool: asyncpg.Pool, db: asyncpg.Connection, merchants: MerchantKeys, may_1: Path
) -> None:
    await closing.close_dates(pool, MAY_1, MAY_2, merchant_id=MERCHANT, note="n", actor="ana", today=TODAY)
    await callback(pool, merchants, "A5", 700, toronto(MAY_1, 15, 2), channel_id="ALA5")
    await reconcile(pool)
    booked = await db.fetch("SELECT corrects_date, booked_on, reason FROM book_entries WHERE kind = 'adjustment'")
    assert [tuple(r.values()) for r in booked] == [(MAY_1, MAY_3, "late_callback")]
    await closing.close_dates(pool, MAY_3, MAY_3, merchant_id=MERCHANT, note="n", actor="ana", today=TODAY)
    may_3 = await summary(pool, MAY_3)

    with pytest.raises(closing.ReopenBlocked, match="2024-05-03"):
        await closing.reopen_date(pool, MAY_1, merchant_id=MERCHANT, reason="r", actor="bo")
    with pytest.raises(closing.ClosingError, match="not closed for every merchant"):
        await closing.reopen_date(pool, MAY_3, merchant_id=None, reason="r", actor="bo")
    assert await summary(pool, MAY_3) == may_3
    await closing.reopen_date(pool, MAY_3, merchant_id=MERCHANT, reason="r", actor="bo")
    await closing.reopen_date(pool, MAY_1, merchant_id=MERCHANT, reason="r", actor="bo")
    # Folded back: May 1 shows A5 live, May 3 no longer carries the adjustment.
    assert [r["entry"] for r in await summary(pool, MAY_3)] == []
    may_1_alipay = next(
        r for r in await summary(pool, MAY_1) if (r["merchant_id"], r["channel"]) == (MERCHANT, "ALIPAY")
    )
    assert (may_1_alipay["payments"], may_1_alipay["gross"]) == ("2", "1700")


async def test_reopen_then_close_again_freezes_the_current_figures_and_keeps_the_audit(
    pool: asyncpg.Pool, db: asyncpg.Connection, merchants: MerchantKeys, may_1: Path
) -> None:
    await closing.close_dates(pool, MAY_1, MAY_1, merchant_id=None, note="first", actor="ana", today=TODAY)
    await callback(pool, merchants, "A5", 700, toronto(MAY_1, 15, 2), channel_id="ALA5")
    await reconcile(pool)
    books = totals(await summary(pool))
    reopened = await closing.reopen_date(pool, MAY_1, merchant_id=None, reason="fold A5 in", actor="bo")
    assert (reopened.reopened_by, reopened.reopen_reason, reopened.note) == ("bo", "fold A5 in", "first")
    live_may_1 = await summary(pool, MAY_1)
    # A5 is not on May 1's statement (not_in_statement): finance closes over it, saying why.
    await closing.close_dates(
        pool, MAY_1, MAY_1, merchant_id=None, note="second", actor="cy", today=TODAY, force_reason="A5 settles late"
    )

    assert await summary(pool, MAY_1) == live_may_1
    assert totals(await summary(pool)) == books
    listed = await closing.list_closes(pool)
    assert [(c.note, c.closed_by, c.reopened_by) for c in listed] == [("second", "cy", None), ("first", "ana", "bo")]
    folded = await db.fetchval("SELECT count(*) FROM book_entries WHERE folded_by = $1", reopened.id)
    assert folded == await db.fetchval("SELECT count(*) FROM book_entries WHERE close_id = $1", reopened.id) + 1


async def test_a_close_waits_for_a_reconciler_batch_in_flight(
    pool: asyncpg.Pool, db: asyncpg.Connection, merchants: MerchantKeys, may_1: Path
) -> None:
    # A batch holds the books shared until it commits; a close taking them exclusively waits for it, so the
    # batch's ledger change and the close's snapshot can never interleave.
    async with pool.acquire() as batch, batch.transaction():
        await books_lock.hold_books_shared(batch)
        close = asyncio.create_task(
            closing.close_dates(pool, MAY_1, MAY_1, merchant_id=None, note="n", actor="ana", today=TODAY)
        )
        await asyncio.sleep(0.3)
        assert not close.done()
    report = await asyncio.wait_for(close, 10)
    assert report.closed == [MAY_1]


async def test_every_figure_of_a_closed_date_is_booked_per_order(
    pool: asyncpg.Pool, db: asyncpg.Connection, may_1: Path
) -> None:
    before = await summary(pool, MAY_1)
    await closing.close_dates(pool, MAY_1, MAY_1, merchant_id=None, note="n", actor="ana", today=TODAY)
    entries = await db.fetch("SELECT order_id, kind, booked_on, corrects_date FROM book_entries ORDER BY order_id")
    assert [(e["order_id"], e["kind"], e["booked_on"]) for e in entries] == [
        ("A1", "close", MAY_1),
        ("A2", "close", MAY_1),
        ("A5", "close", MAY_1),
        ("B1", "close", MAY_1),
    ]
    assert await summary(pool, MAY_1) == before


async def test_close_reopen_and_list_from_the_command_line(
    database_url: str, pool: asyncpg.Pool, db: asyncpg.Connection, merchants: MerchantKeys, may_1: Path
) -> None:
    from tests.integration.test_cli import run_cli

    env = {"DATABASE_URL": database_url}
    await callback(pool, merchants, "A2", 1990, toronto(MAY_1, 11, 1), channel_id="WXA2")
    await reconcile(pool)
    alert_id = await db.fetchval("SELECT id FROM alerts WHERE order_id = 'A2' AND status = 'open'")

    code, out, err = await run_cli("close", "2024-05-01", "--note", "May 1", "--actor", "ana", env=env)
    assert (code, out) == (1, ""), err
    assert f"alert {alert_id}  2024-05-01  {MERCHANT}  A2  amount_mismatch  0.10 CAD at risk" in err
    await acknowledge(pool, alert_id, actor="ana", note="customer pays the 10 cents in cash")
    code, out, err = await run_cli("close", "2024-05-01", "--to", "2024-05-02", "--note", "May 1-2", "--actor", "ana",
                                   env=env)  # fmt: skip
    assert (code, out) == (0, "closed 2024-05-01, 2024-05-02 for every merchant\n"), err
    code, out, err = await run_cli("close", "2024-05-02", "--note", "again", env=env)
    assert (code, out) == (0, "already closed: 2024-05-02\n"), err
    code, out, err = await run_cli("reopen", "2024-05-02", "--reason", "a statement came late", "--actor", "bo",
                                   env=env)  # fmt: skip
    assert (code, out) == (0, "reopened 2024-05-02 for every merchant (closed by ana): its figures are live again\n")
    code, out, err = await run_cli("reopen", "2024-05-02", "--reason", "twice", env=env)
    assert (code, err) == (1, "ottrecon reopen: 2024-05-02 is not closed for every merchant\n")
    code, out, err = await run_cli("closes", "list", env=env)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("2024-05-02  all merchants  closed by ana at ")
    assert " — reopened by bo at " in lines[0] and lines[0].endswith(": a statement came late")
    assert lines[1].startswith("2024-05-01  all merchants  closed by ana at ")
    assert lines[1].endswith(": May 1-2")
    code, _, err = await run_cli("close", "2099-01-01", "--note", "n", env=env)
    assert code == 1 and "is not over yet" in err


async def export(
    pool: asyncpg.Pool, what: str, first: date | None = None, last: date | None = None
) -> list[dict[str, str]]:
    out = io.StringIO()
    await export_report(pool, what, out, date_from=first, date_to=last)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


async def test_exports_show_where_orders_are_booked_their_adjustments_and_the_close_report(
    pool: asyncpg.Pool, db: asyncpg.Connection, merchants: MerchantKeys, may_1: Path
) -> None:
    await callback(pool, merchants, "A2", 1990, toronto(MAY_1, 11, 1), channel_id="WXA2")
    await reconcile(pool)
    a2_alert = await db.fetchval("SELECT id FROM alerts WHERE order_id = 'A2'")
    await acknowledge(pool, a2_alert, actor="ana", note="customer pays the 10 cents in cash")
    await closing.close_dates(pool, MAY_1, MAY_1, merchant_id=None, note="May 1 signed off", actor="ana", today=TODAY)
    await callback(pool, merchants, "A5", 700, toronto(MAY_1, 15, 2), channel_id="ALA5")
    await reconcile(pool)

    ledger = {row["order_id"]: row for row in await export(pool, "ledger")}
    # The ledger export streams through COPY; the cursor path writes the same bytes for the booked cells too.
    by_copy, by_cursor = io.StringIO(), io.StringIO()
    await export_report(pool, "ledger", by_copy)
    await write_csv(pool, by_cursor, LEDGER_EXPORT_COLUMNS, EXPORT_LEDGER, (date.min, date.max, None), 100)
    assert by_copy.getvalue() == by_cursor.getvalue()
    assert (ledger["A1"]["closed_in"], ledger["A1"]["adjustments"]) == ("2024-05-01", "")
    assert (ledger["A5"]["closed_in"], ledger["A5"]["adjustments"]) == (
        "2024-05-01",
        "corrects 2024-05-01 on 2024-05-02 late_callback net 700",
    )
    adjustments = await export(pool, "adjustments")
    assert [(r["booked_on"], r["order_id"], r["corrects_date"], r["reason"], r["payments"], r["net"], r["mismatches"],
             r["amount_at_risk"]) for r in adjustments] == [
        # Paid, and not on May 1's statement: one more payment and one more mismatch, its 7.00 at risk.
        ("2024-05-02", "A5", "2024-05-01", "late_callback", "1", "700", "1", "700"),
    ]  # fmt: skip

    may_1_report = await export(pool, "close-report", MAY_1, MAY_1)
    qc = [(r["section"], r["channel"], r["order_id"], r["net"], r["status"], r["note"], r["who"])
          for r in may_1_report if r["merchant_id"] in ("", MERCHANT)]  # fmt: skip
    assert qc == [
        ("closed", "", "", "", "closed", "May 1 signed off", "ana"),
        # As frozen: A1 10.00 + 1.00 tip - 0.22 fee; A2 20.00 - 0.40 (A5's late payment is booked on May 2).
        ("totals", "ALIPAY", "", "1078", "", "", ""),
        ("totals", "WECHATPAY", "", "1960", "", "", ""),
        # Carried open: A5 is not on May 1's statement; A2's second callback acknowledged, with its note.
        ("mismatch", "ALIPAY", "A5", "", "open", "", ""),
        ("mismatch", "WECHATPAY", "A2", "", "acknowledged", "customer pays the 10 cents in cash", "ana"),
        ("adjustment_out", "ALIPAY", "A5", "700", "", "", ""),
    ]
    may_2 = await export(pool, "close-report", MAY_2, MAY_2)
    assert [(r["section"], r["order_id"], r["corrects_date"], r["detail"]) for r in may_2 if r["order_id"] == "A5"] == [
        ("adjustment_in", "A5", "2024-05-01", "late_callback")
    ]
