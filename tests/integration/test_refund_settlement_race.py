"""Refunds of one payment settling at the same moment (finding 08): the payment's status must be what all of its
settled refunds add up to, whatever order their transactions commit in.

Each round pays a PASSIVEPAY at the OTT Pay simulator, stores 2-4 refunds of it through the api's create_refund,
then lets the refunder settle all of them at once, each on its own pooled connection (as several workers, or the
kicked job and the scheduled retry, do). The oracle is a model a line long: refunded when the settled refunds
cover amount + tip, partially refunded when they cover some of it, paid otherwise; and the gateway's refunded
total must be the sum of the refunds we call succeeded.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from arq import ArqRedis

from ottpay.keys import parse_merchant_keys
from ottrecon.db import fetch_one
from ottrecon.payments import intake
from ottrecon.payments.gateway import Gateway
from ottrecon.payments.refunder import Refunder
from ottrecon.payments.submission import Policy
from ottrecon.payments.submitter import Submitter
from simulator.app import create_app as create_sim
from simulator.core import SIM, Simulator
from tests.conftest import MERCHANT, OLD_KEY
from tests.integration.model_world import scaled
from tests.integration.stack import OPERATOR, sim_settings

# `make soak` runs many more (OTTRECON_REFUND_RACE_ROUNDS).
ROUNDS = scaled("OTTRECON_REFUND_RACE_ROUNDS", 40)


@dataclass
class Parts:
    pool: asyncpg.Pool
    sim: Simulator
    submitter: Submitter
    refunder: Refunder


@pytest.fixture
async def parts(database_url: str) -> AsyncIterator[Parts]:
    merchants = parse_merchant_keys(f"{MERCHANT}={OLD_KEY}")
    server = TestServer(create_sim(sim_settings(merchants)))
    await server.start_server()
    # One connection per refund settling at once, and one for the test.
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=6)
    try:
        async with aiohttp.ClientSession() as session:
            gateway = Gateway(
                lambda: session, merchants, {MERCHANT: OPERATOR}, base_url=str(server.make_url("/")), timeout_s=5
            )
            policy = Policy(passivepay_code_ttl_s=3600)
            yield Parts(
                pool,
                server.app[SIM],
                Submitter(pool, gateway, policy, callback_url=None, lease_s=60),
                Refunder(pool, gateway, policy, lease_s=60),
            )
    finally:
        await pool.close()
        await server.close()


def model_status(refunded: int, paid: int) -> str:
    """What the payment's status must be once these refunds settled (money in cents, tip included)."""
    if refunded >= paid:
        return "refunded"
    return "partially_refunded" if refunded > 0 else "paid"


def split(total: int, parts: int, rng: random.Random) -> list[int]:
    """parts positive amounts adding up to total."""
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


@pytest.mark.timeout(max(60, ROUNDS))
async def test_concurrently_settled_refunds_leave_the_status_their_sum_says(
    parts: Parts, redis: ArqRedis, db: asyncpg.Connection
) -> None:
    rng = random.Random(8)
    wrong: list[str] = []
    for n in range(ROUNDS):
        amount, tip = rng.randint(500, 5000), rng.choice((0, 0, 150))
        request = intake.PaymentRequest(MERCHANT, "PASSIVEPAY", "ALIPAY", amount, tip, f"28{n:012d}5678", None)
        order, _ = await intake.create_payment(parts.pool, redis, request, f"pay-{n}")
        assert (await parts.submitter.process(order["id"])) is not None
        paid = amount + tip
        # Most rounds refund everything in pieces (the case that ended partially_refunded); some leave a rest.
        refunded = paid if rng.random() < 0.7 else rng.randint(3, paid - 1)
        amounts = split(refunded, rng.randint(2, 3), rng)
        refunds = [
            (await intake.create_refund(parts.pool, redis, order["order_id"], cents, f"refund-{n}-{i}"))[0]["id"]
            for i, cents in enumerate(amounts)
        ]

        results = await asyncio.gather(*(parts.refunder.process(pk) for pk in refunds))

        assert [r.status if r else None for r in results] == ["succeeded"] * len(refunds)
        row = await fetch_one(db, "SELECT status FROM orders WHERE id = $1", order["id"])
        payment = await db.fetchval("SELECT status FROM payments WHERE order_id = $1", order["order_id"])
        gateway_refunded = parts.sim.state.orders[(MERCHANT, order["order_id"])].refunded
        expected = model_status(sum(amounts), paid)
        assert gateway_refunded == sum(amounts)
        if (row["status"], payment) != (expected, expected):
            wrong.append(f"round {n}: refunds {amounts} of {paid}: order {row['status']}, payment {payment}")

    assert wrong == [], f"{len(wrong)} of {ROUNDS} rounds wrong:\n" + "\n".join(wrong)
