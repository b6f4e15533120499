"""Taking payments end to end: API → worker → simulator (real HTTP) → callbacks → Postgres."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg

from simulator.faults import Faults
from tests.integration.stack import (
    API_TOKEN,
    FAST_POLICY,
    customer_pays,
    running_stack,
    stop_worker,
    wait_until_started,
)
from worker.main import create_worker


async def test_activepay_returns_a_qr_code_and_is_paid_by_callback(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        status, payment = await stack.pay("k-active-1", kind="ACTIVEPAY", amount=2500, tip=100)
        assert status == 201, payment
        assert payment["status"] == "awaiting_payment"
        assert payment["code_url"] and payment["qr_svg"] == f"/api/payments/{payment['id']}/qr.svg"
        svg = await stack.api.get(payment["qr_svg"], headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert svg.status == 200 and svg.content_type == "image/svg+xml"
        assert b"<svg" in await svg.read()

        await customer_pays(stack.sim, payment["id"])
        paid = await stack.wait_status(payment["id"], {"paid"})

    assert (paid["paid_amount"], paid["paid_source"]) == (2500, "callback")
    row = await db.fetchrow("SELECT amount, tip, source FROM payments WHERE order_id = $1", payment["id"])
    assert row is not None and (row["amount"], row["tip"], row["source"]) == (2500, 100, "callback")
    assert await db.fetchval("SELECT count(*) FROM callbacks") == 1


async def test_lost_callback_is_recovered_by_the_sweep(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url, faults=Faults(drop_callback=1.0)) as stack:
        _, payment = await stack.pay("k-lost-1", kind="ACTIVEPAY", amount=700)
        await customer_pays(stack.sim, payment["id"])
        paid = await stack.wait_status(payment["id"], {"paid"})
        stats = await stack.sim_stats()

    assert paid["paid_source"] == "query"
    assert await db.fetchval("SELECT source FROM payments WHERE order_id = $1", payment["id"]) == "query"
    assert await db.fetchval("SELECT count(*) FROM callbacks") == 0
    assert stats["callbacks"]["dropped"] >= 1


async def test_unpaid_order_is_flagged_once_then_paid_late(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        _, payment = await stack.pay("k-unpaid-1", kind="ACTIVEPAY", amount=900)
        flagged = await stack.wait_status(payment["id"], {"unpaid"})
        assert flagged["unpaid_flagged_at"] is not None
        await _wait_for_alert(db, payment["id"], "unpaid")
        await asyncio.sleep(1.5)  # further sweeps must not raise a second alert
        await customer_pays(stack.sim, payment["id"])
        paid = await stack.wait_status(payment["id"], {"paid"})

    assert paid["unpaid_flagged_at"] == flagged["unpaid_flagged_at"]
    events = await db.fetch(
        "SELECT a.kind, e.action FROM alert_events e JOIN alerts a ON a.id = e.alert_id ORDER BY e.id"
    )
    # Flagged once (one unpaid alert), then the late payment resolved it and raised paid_after_flagged.
    assert [(e["kind"], e["action"]) for e in events if e["kind"] == "unpaid"][:1] == [("unpaid", "opened")]
    assert sum(1 for e in events if (e["kind"], e["action"]) == ("unpaid", "opened")) == 1


async def test_passivepay_is_answered_within_the_wait(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        status, payment = await stack.pay("k-passive-1", kind="PASSIVEPAY", auth_code="283456789012345678")
        stats = await stack.sim_stats()

    assert status == 201
    assert (payment["status"], payment["paid_source"], payment["paid_amount"]) == ("paid", "response", 1000)
    assert "auth_code" not in payment
    assert await db.fetchval("SELECT source FROM payments WHERE order_id = $1", payment["id"]) == "response"
    assert stats["charges_by_order_max"] == 1


async def test_declined_passivepay_is_final_and_not_retried(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        _, payment = await stack.pay("k-decline-1", kind="PASSIVEPAY", auth_code="283456789012340000")
        await asyncio.sleep(1.5)  # scheduled retries run meanwhile and must leave it alone
        final = await stack.get(f"/api/payments/{payment['id']}")

    assert payment["status"] == "declined" and final["status"] == "declined"
    assert final["status_reason"].startswith("FAIL")
    attempts = await db.fetch("SELECT action, outcome FROM submission_attempts")
    assert [(a["action"], a["outcome"]) for a in attempts] == [("PASSIVEPAY", "declined")]


async def test_passivepay_processing_is_resolved_by_query_without_a_second_charge(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    faults = Faults(processing=1.0, processing_delay_s=0.3)
    async with running_stack(database_url, redis_url, faults=faults) as stack:
        _, payment = await stack.pay("k-processing-1", kind="PASSIVEPAY", auth_code="283456789012341111")
        paid = await stack.wait_status(payment["id"], {"paid"})
        stats = await stack.sim_stats()

    assert paid["paid_source"] == "query"
    actions = [r["action"] for r in await db.fetch("SELECT action FROM submission_attempts ORDER BY id")]
    assert actions[0] == "PASSIVEPAY" and set(actions[1:]) == {"STATUS_QUERY"}
    assert stats["charges_by_order_max"] == 1


async def test_passivepay_timeout_is_resolved_by_query_without_a_second_charge(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    # Every PASSIVEPAY answer is lost (held past the client's timeout) although the customer was
    # charged; the simulator answers queries truthfully.
    async with running_stack(database_url, redis_url, faults=Faults(timeout=1.0), gateway_timeout_s=0.5) as stack:
        _, payment = await stack.pay("k-timeout-1", kind="PASSIVEPAY", auth_code="283456789012342222")
        paid = await stack.wait_status(payment["id"], {"paid"})
        stats = await stack.sim_stats()

    first = await db.fetchrow("SELECT action, outcome, error, sent FROM submission_attempts ORDER BY id LIMIT 1")
    assert first is not None
    assert (first["action"], first["outcome"], first["error"], first["sent"]) == (
        "PASSIVEPAY",
        "unknown",
        "timeout",
        True,
    )

    assert paid["paid_source"] == "query"
    actions = [r["action"] for r in await db.fetch("SELECT action FROM submission_attempts ORDER BY id")]
    assert actions.count("PASSIVEPAY") == 1, actions
    assert stats["charges_by_order_max"] == 1


async def test_unreachable_gateway_retries_are_bounded(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        await stack.sim.server.close()  # nothing listens at the gateway's address any more
        _, payment = await stack.pay("k-down-1", kind="ACTIVEPAY", amount=300)
        failed = await stack.wait_status(payment["id"], {"failed"})

    assert "unreachable" in failed["status_reason"]
    attempts = await db.fetch("SELECT sent, error FROM submission_attempts")
    assert len(attempts) == stack.settings.policy.max_attempts
    assert all(not a["sent"] for a in attempts)


async def test_sweeps_on_two_workers_never_handle_an_order_twice(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url, faults=Faults(drop_callback=1.0)) as stack:
        second = create_worker(dataclasses.replace(stack.settings, poll_delay_s=0.01), handle_signals=False)
        second_run = asyncio.create_task(second.main())
        await wait_until_started(second, second_run)
        try:
            ids = [(await stack.pay(f"k-two-{n}", kind="ACTIVEPAY", amount=100 + n))[1]["id"] for n in range(8)]
            for payment_id in ids:
                await customer_pays(stack.sim, payment_id)
            for payment_id in ids:
                await stack.wait_status(payment_id, {"paid"})
        finally:
            await stop_worker(second, second_run)

    # Each order's payment was learned by exactly one query, whichever worker made it.
    rows = await db.fetch(
        "SELECT o.order_id, count(*) AS n FROM submission_attempts a JOIN orders o ON o.id = a.order_ref "
        "WHERE a.action = 'STATUS_QUERY' AND a.gateway_status = 'success' GROUP BY o.order_id"
    )
    assert sorted((r["order_id"], r["n"]) for r in rows) == sorted((i, 1) for i in ids)
    assert await db.fetchval("SELECT count(*) FROM payments WHERE source = 'query'") == 8


async def test_duplicated_and_reordered_callbacks_are_harmless(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    faults = Faults(duplicate_callback=1.0, reorder_callback=1.0, reorder_delay_s=0.3)
    async with running_stack(database_url, redis_url, faults=faults) as stack:
        ids = [(await stack.pay(f"k-dup-{n}", kind="ACTIVEPAY", amount=200 + n))[1]["id"] for n in range(3)]
        for payment_id in ids:
            await customer_pays(stack.sim, payment_id)
        for payment_id in ids:
            assert (await stack.wait_status(payment_id, {"paid"}))["paid_source"] == "callback"
        await asyncio.sleep(1.0)  # let the duplicates arrive too
        stats = await stack.sim_stats()

    assert stats["callbacks"]["duplicated"] >= 3
    assert await db.fetchval("SELECT count(*) FROM callbacks") == 3
    assert await db.fetchval("SELECT count(*) FROM payments") == 3


async def _wait_for_alert(db: asyncpg.Connection, order_id: str, kind: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not await db.fetchval("SELECT count(*) FROM alerts WHERE order_id = $1 AND kind = $2", order_id, kind):
        assert asyncio.get_running_loop().time() < deadline, f"no {kind} alert for {order_id}"
        await asyncio.sleep(0.1)


async def test_order_needing_review_raises_a_review_alert(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        _, payment = await stack.pay("k-review-1", kind="ACTIVEPAY", amount=1300, tip=20)
        assert payment["status"] == "awaiting_payment"
        # The gateway forgets an order it had accepted: its status now needs a person (decision 0010).
        assert (await stack.sim.post("/sim/reset")).status == 200
        review = await stack.wait_status(payment["id"], {"review"})
        await _wait_for_alert(db, payment["id"], "review")

    assert review["status_reason"] == "gateway has no record of an accepted order"
    alert = await db.fetchrow("SELECT amount_at_risk, status FROM alerts WHERE kind = 'review'")
    assert alert is not None and (alert["amount_at_risk"], alert["status"]) == (1320, "open")
    assert await db.fetchval("SELECT recon_status FROM ledger WHERE order_id = $1", payment["id"]) == "review"


async def test_passivepay_the_gateway_keeps_pending_is_given_up_after_its_window(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    # The customer never finishes entering the PIN: the gateway answers notpay for ever.
    faults = Faults(processing=1.0, processing_delay_s=3600)
    async with running_stack(database_url, redis_url, faults=faults) as stack:
        _, payment = await stack.pay("k-notpay-1", kind="PASSIVEPAY", amount=800, auth_code="283456789012345555")
        given_up = await stack.wait_status(payment["id"], {"unpaid"}, timeout_s=20)
        queries = await db.fetchval("SELECT count(*) FROM submission_attempts WHERE action = 'STATUS_QUERY'")
        await _wait_for_alert(db, payment["id"], "unpaid")
        await asyncio.sleep(1.5)  # scheduled retries and sweeps run meanwhile and must leave it alone
        queries_later = await db.fetchval("SELECT count(*) FROM submission_attempts WHERE action = 'STATUS_QUERY'")
        sim_order = await (await stack.sim.get(f"/sim/orders/{payment['merchant_id']}/{payment['id']}")).json()

    assert sim_order["status"] == "notpay"  # the gateway never settled it: nothing else could end the polling
    row = await db.fetchrow("SELECT given_up_at, unpaid_flagged_at FROM orders WHERE order_id = $1", payment["id"])
    assert row is not None and row["given_up_at"] is not None and row["unpaid_flagged_at"] is not None
    assert given_up["status_reason"].startswith("given up: the gateway still reports notpay")
    assert queries >= 1 and queries_later == queries


async def test_order_given_up_and_paid_late_is_paid_and_alerted(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    policy = dataclasses.replace(FAST_POLICY, unpaid_deadline_s=1.0, sweep_max_age_s=2.0)
    async with running_stack(database_url, redis_url, policy=policy) as stack:
        _, payment = await stack.pay("k-late-1", kind="ACTIVEPAY", amount=650)
        await stack.wait_status(payment["id"], {"unpaid"})
        deadline = asyncio.get_running_loop().time() + 10
        while not await db.fetchval("SELECT given_up_at FROM orders WHERE order_id = $1", payment["id"]):
            assert asyncio.get_running_loop().time() < deadline, "not given up past sweep_max_age_s"
            await asyncio.sleep(0.1)
        await customer_pays(stack.sim, payment["id"])
        paid = await stack.wait_status(payment["id"], {"paid"})
        await _wait_for_alert(db, payment["id"], "paid_after_flagged")

    # Money that moved after the give-up still wins: the order is paid, by its callback.
    assert (paid["paid_source"], paid["paid_amount"]) == ("callback", 650)
    assert await db.fetchval("SELECT given_up_at FROM orders WHERE order_id = $1", payment["id"]) is not None
