"""Refunds: partial, full, too much, replayed; each refund has its own order id at the gateway."""

from __future__ import annotations

from typing import Any

import aiohttp
import asyncpg

from ottpay.keys import MerchantKeys
from ottrecon.db import fetch_one
from ottrecon.payments import intake, refund_store, store
from ottrecon.payments.errors import NotRefundable
from ottrecon.payments.gateway import Gateway
from ottrecon.payments.refunder import Refunder
from ottrecon.payments.submission import Policy
from tests.conftest import MERCHANT
from tests.integration.stack import API_TOKEN, Stack, running_stack


async def refund(stack: Stack, payment_id: str, amount: Any, key: str) -> tuple[int, dict[str, Any]]:
    response = await stack.api.post(
        f"/api/payments/{payment_id}/refunds",
        json={"amount": amount},
        headers={"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": key},
    )
    return response.status, await response.json()


async def test_partial_then_full_refund_and_no_refund_beyond_the_payment(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        _, payment = await stack.pay("k-r-1", kind="PASSIVEPAY", amount=1000, auth_code="283456789012343333")
        assert payment["status"] == "paid"

        status, first = await refund(stack, payment["id"], 400, "r1")
        assert (status, first["status"]) == (201, "succeeded")
        replay_status, replay = await refund(stack, payment["id"], 400, "r1")
        assert (replay_status, replay["id"]) == (200, first["id"])
        too_much, body = await refund(stack, payment["id"], 601, "r2")
        assert (too_much, body["error"]) == (409, "not_refundable")
        status, second = await refund(stack, payment["id"], 600, "r3")
        assert (status, second["status"]) == (201, "succeeded")
        final = await stack.get(f"/api/payments/{payment['id']}")
        sim_order = await (await stack.sim.get(f"/sim/orders/{payment['merchant_id']}/{payment['id']}")).json()

    assert final["status"] == "refunded"
    assert [r["amount"] for r in final["refunds"]] == [400, 600]
    assert first["id"] != second["id"] and first["id"] != payment["id"]
    assert sim_order["status"] == "fully_refunded"
    assert await db.fetchval("SELECT status FROM payments WHERE order_id = $1", payment["id"]) == "refunded"


async def test_unpaid_payment_cannot_be_refunded(database_url: str, redis_url: str) -> None:
    async with running_stack(database_url, redis_url) as stack:
        _, payment = await stack.pay("k-r-2", kind="ACTIVEPAY", amount=500)
        status, body = await refund(stack, payment["id"], 100, "r1")
        missing, _ = await refund(stack, "NOSUCHPAYMENT", 100, "r1")
        bad, _ = await refund(stack, payment["id"], 1.5, "r2")

    assert (status, body["error"]) == (409, "not_refundable")
    assert (missing, bad) == (404, 422)


async def test_tip_is_kept_apart_from_the_amount_and_is_refundable(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        _, payment = await stack.pay("k-r-tip", kind="PASSIVEPAY", amount=1000, tip=150, auth_code="283456789012344444")
        status, whole = await refund(stack, payment["id"], 1150, "r1")
        final = await stack.get(f"/api/payments/{payment['id']}")

    assert (payment["status"], payment["paid_amount"], payment["tip"]) == ("paid", 1000, 150)
    assert (status, whole["status"], final["status"]) == (201, "succeeded", "refunded")
    row = await db.fetchrow("SELECT amount, tip FROM payments WHERE order_id = $1", payment["id"])
    assert row is not None and (row["amount"], row["tip"]) == (1000, 150)


async def test_one_failing_refund_does_not_hold_back_the_other_due_refunds(
    database_url: str, db: asyncpg.Connection
) -> None:
    # Submitter.process_due handles every claimed order and logs each failure; the refunder stopped at the first
    # failing refund, leaving the rest of the batch leased and untouched until their leases ran out.
    order = (MERCHANT, "P0000000000000000001", "PASSIVEPAY", "ALIPAY", 1000, 0, None, "123456", "k", "s")
    order_pk = (await fetch_one(db, store.INSERT_ORDER, *order))["id"]
    refunds = [
        await fetch_one(
            db, refund_store.INSERT_REFUND, order_pk, MERCHANT, f"R000000000000000000{n}", 100, f"r{n}", "s"
        )
        for n in (1, 2)
    ]
    # A real fault in Postgres: the first refund's UPDATE fails (as a lost connection or a bug would).
    await db.execute(
        f"""
        CREATE FUNCTION refuse_first() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'refund % refused for the test', OLD.id; END $$;
        CREATE TRIGGER refuse_first BEFORE UPDATE ON refunds FOR EACH ROW
            WHEN (OLD.id = {int(refunds[0]["id"])} AND OLD.lease_until IS NOT NULL AND NEW.lease_until IS NULL)
            EXECUTE FUNCTION refuse_first();
        """
    )
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=4)
    try:
        async with aiohttp.ClientSession() as session:
            # No operator configured: each refund is settled as failed without a request (nothing to fake).
            gateway = Gateway(lambda: session, MerchantKeys(), {}, base_url="http://127.0.0.1:9", timeout_s=1)
            claimed = await Refunder(pool, gateway, Policy(), lease_s=60).process_due(10)
    finally:
        await pool.close()

    assert claimed == 2
    statuses = {r["id"]: r["status"] for r in await db.fetch("SELECT id, status FROM refunds")}
    assert statuses == {refunds[0]["id"]: "pending", refunds[1]["id"]: "failed"}


# An order of 10.00 + 1.00 tip whose authentic callback reported the tip as 0 (the ledger flags amount_mismatch).
PAID_WITHOUT_ITS_TIP = """
WITH o AS (
    INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, tip, idempotency_key, request_sha256,
                        status, paid_amount, paid_source, paid_at)
    VALUES ($1, 'TIP0', 'ACTIVEPAY', 'ALIPAY', 1000, 100, 'tip0', 'sha', 'paid', 1000, 'callback', now())
    RETURNING id, merchant_id, order_id
)
INSERT INTO payments (merchant_id, order_id, status, amount, tip, source)
SELECT merchant_id, order_id, 'paid', 1000, 0, 'callback' FROM o
"""


async def test_a_tip_the_payment_did_not_carry_is_not_refundable_and_a_full_refund_is_refunded(
    database_url: str, db: asyncpg.Connection
) -> None:
    # Found by an independent review: the refundable bound took the ordered tip whatever the payment reported.
    await db.execute(PAID_WITHOUT_ITS_TIP, MERCHANT)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        try:
            await intake.store_refund(pool, "TIP0", 1100, "r-too-much")
        except NotRefundable as exc:
            refused = str(exc)
        else:
            refused = ""
        refund, created = await intake.store_refund(pool, "TIP0", 1000, "r-all")
        async with pool.acquire() as conn, conn.transaction():
            await refund_store.lock_order_for_refund(conn, refund["order_ref"])
            await refund_store.settle_refund(conn, refund["id"], refund["order_ref"], "succeeded", None, None, None)
    finally:
        await pool.close()

    # Before: 1100 was accepted (and sent, for the gateway to refuse), and 1000 left the order partially refunded.
    assert "at most 1000 cents" in refused
    assert created
    assert await db.fetchval("SELECT status FROM orders WHERE order_id = 'TIP0'") == "refunded"
    assert await db.fetchval("SELECT status FROM payments WHERE order_id = 'TIP0'") == "refunded"
