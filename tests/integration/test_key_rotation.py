"""A sign key rotation run through the whole service (docs/OPERATIONS.md): api → worker → simulator →
callbacks → Postgres, with the worker redeployed at each step. No payment, callback or refund fails."""

from __future__ import annotations

import itertools

import asyncpg

from ottpay.keys import parse_merchant_keys
from tests.conftest import MERCHANT, NEW_KEY, OLD_KEY
from tests.integration.stack import API_TOKEN, Stack, customer_pays, running_stack

_keys = itertools.count(1)


async def _take_payments(stack: Stack, step: str) -> None:
    """A wallet payment, refunded in part, and a QR payment paid by callback; all must succeed."""
    # A wallet barcode is single use: each payment scans a new one.
    auth_code = f"28{next(_keys):016d}"
    status, passive = await stack.pay(f"rot-{next(_keys)}", kind="PASSIVEPAY", auth_code=auth_code)
    assert (status, passive["status"]) == (201, "paid"), (step, passive)
    response = await stack.api.post(
        f"/api/payments/{passive['id']}/refunds",
        json={"amount": 300},
        headers={"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": f"rot-r-{next(_keys)}"},
    )
    refund = await response.json()
    assert (response.status, refund["status"]) == (201, "succeeded"), (step, refund)

    _, active = await stack.pay(f"rot-{next(_keys)}", kind="ACTIVEPAY", amount=1200)
    assert active["status"] == "awaiting_payment", (step, active)
    await customer_pays(stack.sim, active["id"])
    await stack.wait_status(active["id"], {"paid"})


async def test_rotation_through_the_service_never_fails_a_payment(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    # The simulated gateway starts with the one key the worker knows.
    async with running_stack(database_url, redis_url, merchants=parse_merchant_keys(f"{MERCHANT}={OLD_KEY}")) as stack:
        await _take_payments(stack, "before")
        # Step 1: add the new key after the current one, redeploy.
        await stack.restart_worker(parse_merchant_keys(f"{MERCHANT}={OLD_KEY},{MERCHANT}={NEW_KEY}"))
        await _take_payments(stack, "new key added")
        # Step 2: the merchant switches the key in OTT Pay's portal; nothing is redeployed.
        response = await stack.sim.post(f"/sim/merchants/{MERCHANT}/signkey", json={"signkey": NEW_KEY})
        assert response.status == 200, await response.text()
        await _take_payments(stack, "gateway switched")
        # Step 3: promote the new key; step 4: drop the old one.
        await stack.restart_worker(parse_merchant_keys(f"{MERCHANT}={NEW_KEY},{MERCHANT}={OLD_KEY}"))
        await _take_payments(stack, "promoted")
        await stack.restart_worker(parse_merchant_keys(f"{MERCHANT}={NEW_KEY}"))
        await _take_payments(stack, "after")
        stats = await stack.sim_stats()

    assert await db.fetchval("SELECT count(*) FROM orders WHERE status NOT IN ('paid', 'partially_refunded')") == 0
    assert await db.fetchval("SELECT count(*) FROM orders") == 10
    assert await db.fetchval("SELECT count(*) FROM rejected_callbacks") == 0
    # Every QR payment was proven by its verified callback, whichever key sealed it.
    assert await db.fetchval("SELECT count(*) FROM callbacks") == 5
    assert stats["charges_by_order_max"] == 1 and not stats["auth_codes_charged_more_than_once"]
