"""A worker that dies while its PASSIVEPAY is at the gateway: whoever takes the order over asks before deciding.

The independent payment-faults test (test_payment_submission_faults_independent.py, its opt-in crash test) found
that the attempt was recorded only once the answer came back. A worker killed in between left no trace of the
request: once its lease lapsed the order looked never sent and, its payment code being past its lifetime, was
expired ("the gateway never received it") while the gateway had charged the customer. Here the kill is the send's
task cancelled while the simulator holds the answer (nothing after the send runs, as after SIGKILL); the lease and
the code's lifetime are short so the takeover happens within a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ottpay.keys import parse_merchant_keys
from ottrecon.payments import store
from ottrecon.payments.gateway import Gateway
from ottrecon.payments.submission import Policy
from ottrecon.payments.submitter import Submitter
from simulator.app import create_app as create_sim
from simulator.faults import Faults
from tests.conftest import MERCHANT, NEW_KEY, OLD_KEY
from tests.integration.stack import OPERATOR, sim_settings

LEASE_S = 0.3
POLICY = Policy(passivepay_code_ttl_s=0.3, base_delay_s=0.05, max_delay_s=0.2)
ORDER = (MERCHANT, "CRASH1", "PASSIVEPAY", "ALIPAY", 4321, 0, None, "283456789012345671", "crash-1", "sha")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as created:
        yield created


async def test_a_passivepay_whose_worker_died_at_the_gateway_is_queried_and_paid_not_expired(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    merchants = parse_merchant_keys(f"{MERCHANT}={OLD_KEY},{MERCHANT}={NEW_KEY}")
    # Every PASSIVEPAY is carried out (charged) and its answer held; queries are always answered (SIMULATOR.md).
    settings = sim_settings(merchants, faults=Faults(timeout=1.0), timeout_hold_s=30.0)
    async with TestClient(TestServer(create_sim(settings))) as sim, aiohttp.ClientSession() as session:
        gateway = Gateway(
            lambda: session, merchants, {MERCHANT: OPERATOR}, base_url=str(sim.make_url("/")), timeout_s=20.0
        )
        submitter = Submitter(pool, gateway, POLICY, callback_url=None, lease_s=LEASE_S)
        order = await db.fetchrow(store.INSERT_ORDER, *ORDER)
        assert order is not None

        dying = asyncio.create_task(submitter.process(order["id"]))
        for _ in range(200):  # until the gateway has charged it
            if (await sim.get(f"/sim/orders/{MERCHANT}/CRASH1")).status == 200:
                break
            await asyncio.sleep(0.02)
        dying.cancel()  # the worker dies: nothing after the send runs
        with pytest.raises(asyncio.CancelledError):
            await dying
        charged = await (await sim.get(f"/sim/orders/{MERCHANT}/CRASH1")).json()
        assert charged["status"] == "success"

        await asyncio.sleep(max(LEASE_S, POLICY.passivepay_code_ttl_s) + 0.1)  # the lease and the code both lapse
        # Another worker takes the order over. Before: it expired it without asking ("never received").
        transition = await submitter.process(order["id"])
        stats = await (await sim.get("/sim/stats")).json()

    assert transition is not None and transition.status == "paid", transition
    final = await db.fetchrow("SELECT status, paid_amount, paid_source FROM orders WHERE id = $1", order["id"])
    assert final is not None and tuple(final) == ("paid", 4321, "query")
    attempts = await db.fetch("SELECT action, outcome, sent, error FROM submission_attempts ORDER BY id")
    # The request that died with its worker stays on record as sent with no answer, then the query that found it.
    assert [(a["action"], a["outcome"], a["sent"]) for a in attempts] == [
        ("PASSIVEPAY", "unknown", True),
        ("STATUS_QUERY", "success", True),
    ]
    assert attempts[0]["error"].startswith("no answer recorded")
    assert stats["charges_by_order_max"] == 1


async def test_an_answered_passivepay_leaves_one_attempt_the_in_flight_mark_is_replaced(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    merchants = parse_merchant_keys(f"{MERCHANT}={OLD_KEY},{MERCHANT}={NEW_KEY}")
    async with TestClient(TestServer(create_sim(sim_settings(merchants)))) as sim, aiohttp.ClientSession() as session:
        gateway = Gateway(
            lambda: session, merchants, {MERCHANT: OPERATOR}, base_url=str(sim.make_url("/")), timeout_s=5.0
        )
        submitter = Submitter(pool, gateway, Policy(), callback_url=None, lease_s=30.0)
        order = await db.fetchrow(store.INSERT_ORDER, *ORDER)
        assert order is not None
        transition = await submitter.process(order["id"])

    assert transition is not None and transition.status == "paid"
    attempts = await db.fetch("SELECT action, outcome, error FROM submission_attempts ORDER BY id")
    assert [tuple(a) for a in attempts] == [("PASSIVEPAY", "success", None)]
