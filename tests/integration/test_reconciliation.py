"""Every reconciliation status produced through the real pipeline, alerted once, resolved by evidence."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg

from ottrecon import db as worker_db
from ottrecon.reconciliation.layouts import StatementLayout
from ottrecon.reconciliation.reconcile import mark_all_dirty, reconcile_pending
from ottrecon.reconciliation.statements import import_statement
from simulator.faults import Faults
from tests.conftest import MERCHANT, NEW_KEY
from tests.integration.stack import Stack, customer_pays, running_stack
from tests.integration.support import make_callback


async def ledger_row(db: asyncpg.Connection, order_id: str, status: str | None = None, timeout_s: float = 10) -> Any:
    """The order's ledger row once the worker's reconciler has produced it (with that status, if given)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        row = await db.fetchrow("SELECT * FROM ledger WHERE merchant_id = $1 AND order_id = $2", MERCHANT, order_id)
        if row is not None and (status is None or row["recon_status"] == status):
            return row
        assert asyncio.get_running_loop().time() < deadline, f"ledger row for {order_id}: {row and dict(row)}"
        await asyncio.sleep(0.1)


async def alert_events(db: asyncpg.Connection, order_id: str) -> list[tuple[str, str, str]]:
    rows = await db.fetch(
        "SELECT a.kind, e.action, a.status FROM alert_events e JOIN alerts a ON a.id = e.alert_id "
        "WHERE a.order_id = $1 ORDER BY e.id",
        order_id,
    )
    return [(r["kind"], r["action"], r["status"]) for r in rows]


async def post_callback(stack: Stack, body: dict[str, str]) -> None:
    response = await stack.receiver.post("/ottpay/callback", json=body)
    assert response.status == 200


async def sim_order(stack: Stack, order_id: str) -> dict[str, Any]:
    result: dict[str, Any] = await (await stack.sim.get(f"/sim/orders/{MERCHANT}/{order_id}")).json()
    return result


async def test_paid_by_callback_is_matched_without_alerts(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        _, payment = await stack.pay("k-m", kind="ACTIVEPAY", amount=1200, tip=30)
        await customer_pays(stack.sim, payment["id"])
        await stack.wait_status(payment["id"], {"paid"})
        row = await ledger_row(db, payment["id"], "matched")

    assert (row["expected_amount"], row["received_amount"], row["received_tip"]) == (1200, 1200, 30)
    assert (row["kind"], row["channel"], row["callback_count"], row["paid_source"]) == (
        "ACTIVEPAY",
        "ALIPAY",
        1,
        "callback",
    )
    assert len(row["channel_payment_ids"]) == 1
    assert await db.fetchval("SELECT count(*) FROM alerts") == 0


async def test_missing_callback_is_alerted_once_and_resolved_by_the_late_callback(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url, faults=Faults(drop_callback=1.0)) as stack:
        _, payment = await stack.pay("k-mc", kind="ACTIVEPAY", amount=800)
        await customer_pays(stack.sim, payment["id"])
        await stack.wait_status(payment["id"], {"paid"})
        await ledger_row(db, payment["id"], "missing_callback")
        # Reconciling again (any number of times) does not alert again.
        pool = await worker_db.create_pool(database_url, 1)
        try:
            await mark_all_dirty(pool)
            await reconcile_pending(pool, business_tz="America/Toronto")
        finally:
            await pool.close()
        assert await alert_events(db, payment["id"]) == [("missing_callback", "opened", "open")]

        # The callback OTT Pay finally delivers (same channel payment, signed with the current key).
        paid = await sim_order(stack, payment["id"])
        late = make_callback(payment["id"], "800", key=NEW_KEY, bizpay_order_id=paid["bizpay_order_id"])
        await post_callback(stack, late)
        row = await ledger_row(db, payment["id"], "matched")

    assert row["callback_count"] == 1
    assert await alert_events(db, payment["id"]) == [
        ("missing_callback", "opened", "resolved"),
        ("missing_callback", "resolved", "resolved"),
    ]
    resolution = await db.fetchval("SELECT resolution FROM alerts WHERE order_id = $1", payment["id"])
    assert resolution == "evidence"


async def test_callback_amount_differing_from_the_order_is_an_amount_mismatch(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url, faults=Faults(amount_mismatch=1.0)) as stack:
        _, payment = await stack.pay("k-am", kind="ACTIVEPAY", amount=1000)
        await customer_pays(stack.sim, payment["id"])
        row = await ledger_row(db, payment["id"], "amount_mismatch")

    assert row["expected_amount"] == 1000 and row["amount_at_risk"] == 1
    assert await alert_events(db, payment["id"]) == [("amount_mismatch", "opened", "open")]


async def test_orphan_and_duplicate_payments_are_recognised(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        await post_callback(stack, make_callback("NEVERCREATED1", "4500", key=NEW_KEY))
        _, payment = await stack.pay("k-dp", kind="ACTIVEPAY", amount=600)
        await customer_pays(stack.sim, payment["id"])
        await stack.wait_status(payment["id"], {"paid"})
        # A second, different channel payment reported for the same order.
        await post_callback(stack, make_callback(payment["id"], "600", key=NEW_KEY, bizpay_order_id="AL999SECOND"))
        orphan = await ledger_row(db, "NEVERCREATED1", "orphan_payment")
        duplicate = await ledger_row(db, payment["id"], "duplicate_payment")

    assert (orphan["kind"], orphan["received_amount"], orphan["amount_at_risk"]) == (None, 4500, 4500)
    assert len(duplicate["channel_payment_ids"]) == 2 and duplicate["amount_at_risk"] == 600
    kinds = {r["kind"] for r in await db.fetch("SELECT kind FROM alerts")}
    assert kinds == {"orphan_payment", "duplicate_payment"}


async def test_unpaid_then_paid_late_is_paid_after_flagged(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        _, payment = await stack.pay("k-ul", kind="ACTIVEPAY", amount=750)
        unpaid = await ledger_row(db, payment["id"], "unpaid")
        await customer_pays(stack.sim, payment["id"])
        late = await ledger_row(db, payment["id"], "paid_after_flagged")

    assert unpaid["amount_at_risk"] == 750 and late["amount_at_risk"] == 750
    assert await alert_events(db, payment["id"]) == [
        ("unpaid", "opened", "resolved"),
        ("paid_after_flagged", "opened", "open"),
        ("unpaid", "resolved", "resolved"),
    ]


async def test_statement_three_way_match_finds_both_kinds_of_difference(
    database_url: str, redis_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        ids = []
        for n in range(4):
            _, payment = await stack.pay(
                f"k-st-{n}", kind="PASSIVEPAY", amount=1000 + n, auth_code=f"28345678901234{n + 1:04d}"
            )
            assert payment["status"] == "paid"
            ids.append(payment["id"])
        for order_id in ids:
            await ledger_row(db, order_id, "matched")
        today = (await db.fetchval("SELECT (now() AT TIME ZONE 'America/Toronto')::date")).isoformat()
        response = await stack.sim.get(
            f"/sim/statement.csv?from={today}&to={today}&missing=1&extra=1&amount_differs=1&seed=3"
        )
        assert response.status == 200
        missing = response.headers["X-Sim-Missing"].split("/")[1]
        extra = response.headers["X-Sim-Extra"].split("/")[1]
        differs = response.headers["X-Sim-Amount-Differs"].split("/")[1]
        statement = tmp_path / "statement.csv"
        statement.write_bytes(await response.read())

        pool = await worker_db.create_pool(database_url, 1)
        try:
            report = await import_statement(pool, statement, StatementLayout())
        finally:
            await pool.close()
        assert report.lines_stored == 4  # 4 paid - 1 missing + 1 extra
        not_in_statement = await _statement_status(db, missing, "not_in_statement")
        not_in_ledger = await _statement_status(db, extra, "not_in_ledger")
        amount_differs = await _statement_status(db, differs, "amount_differs")

    assert not_in_statement["recon_status"] == "matched"
    assert (not_in_ledger["recon_status"], not_in_ledger["kind"]) == ("not_in_ledger", None)
    assert amount_differs["statement_amount"] != amount_differs["received_amount"]
    kinds = sorted(r["kind"] for r in await db.fetch("SELECT kind FROM alerts"))
    assert kinds == ["not_in_ledger", "not_in_statement", "statement_amount_differs"]
    matched = [i for i in ids if i not in {missing, differs}]
    for order_id in matched:
        assert (await ledger_row(db, order_id))["statement_status"] == "matched"


async def _statement_status(db: asyncpg.Connection, order_id: str, status: str) -> Any:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        row = await db.fetchrow("SELECT * FROM ledger WHERE order_id = $1", order_id)
        if row is not None and row["statement_status"] == status:
            return row
        assert asyncio.get_running_loop().time() < deadline, f"{order_id}: {row and dict(row)}"
        await asyncio.sleep(0.1)


async def _import(pool: Any, path: Path, text: str) -> None:
    await asyncio.to_thread(path.write_text, text)
    await import_statement(pool, path, StatementLayout())


async def test_overlapping_statements_count_a_payment_once_and_unseen_payments_carry_their_risk(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # A PASSIVEPAY we know paid (10.00), and an ACTIVEPAY we still think unpaid (7.50).
    for order_id, kind, status, code in (
        ("OVL1", "PASSIVEPAY", "paid", "283456789012340001"),
        ("OVL2", "ACTIVEPAY", "awaiting_payment", None),
    ):
        await db.execute(
            "INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, auth_code, idempotency_key,"
            " request_sha256, status, paid_amount, paid_source) VALUES ($1, $2, $3, 'ALIPAY', $4, $5, $2, 'x', $6,"
            " $7, $8)",
            MERCHANT, order_id, kind, 1000 if kind == "PASSIVEPAY" else 750, code, status,
            1000 if status == "paid" else None, "response" if status == "paid" else None,
        )  # fmt: skip
    await db.execute(
        "INSERT INTO payments (merchant_id, order_id, status, amount, tip, bizpay_order_id, source)"
        " VALUES ($1, 'OVL1', 'paid', 1000, 0, 'AL1', 'response')",
        MERCHANT,
    )
    header = "merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n"
    pool = await worker_db.create_pool(database_url, 1)
    try:
        # A weekly statement, then the monthly one repeating the payment with a refund since.
        await _import(pool, tmp_path / "week.csv", header + f"{MERCHANT},OVL1,AL1,1000,0,20,0,2026-11-20 10:00:00\n")
        await _import(pool, tmp_path / "month.csv", header + f"{MERCHANT},OVL1,AL1,1000,0,20,300,2026-11-20 10:00:00\n"
                      f"{MERCHANT},OVL2,AL2,750,0,15,0,2026-11-20 11:00:00\n")  # fmt: skip
        await reconcile_pending(pool, business_tz="America/Toronto")
    finally:
        await pool.close()

    once = await db.fetchrow(
        "SELECT statement_amount, fee, statement_status, statement_refund, statement_amount_at_risk"
        " FROM ledger WHERE order_id = 'OVL1'"
    )
    # Counted once (the month supersedes the week); the 3.00 refund it states was never made by us.
    assert once is not None and tuple(once.values()) == (1000, 20, "refund_differs", 300, 300)
    unseen = await db.fetchrow("SELECT statement_status, statement_amount_at_risk FROM ledger WHERE order_id = 'OVL2'")
    assert unseen is not None and (unseen["statement_status"], unseen["statement_amount_at_risk"]) == (
        "not_in_ledger",
        750,
    )
