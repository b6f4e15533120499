"""Watching payments settle, then reading back what the API, the simulator and the database each say."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import aiohttp
import asyncpg

from .environment import MERCHANT
from .processes import Stack

PENDING = frozenset({"pending", "awaiting_payment"})
GATEWAY_PAID = frozenset({"success", "partial_refunded", "fully_refunded"})
LEDGER_PAID = frozenset({"paid", "partially_refunded", "refunded"})


async def get_json(session: aiohttp.ClientSession, url: str, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as response:
        response.raise_for_status()
        answer: dict[str, Any] = await response.json()
        return answer


async def list_payments(session: aiohttp.ClientSession, stack: Stack) -> list[dict[str, Any]]:
    payments: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await get_json(session, f"{stack.api_url}/api/payments?limit=200{cursor}", stack.token)
        payments += page["payments"]
        if page["next"] is None:
            return payments
        cursor = f"&after={page['next']}"


async def wait_settled(session: aiohttp.ClientSession, stack: Stack, timeout_s: float) -> list[dict[str, Any]]:
    """Poll the API until no payment is pending or awaiting payment, or timeout_s passed."""
    deadline = time.monotonic() + timeout_s
    next_report = time.monotonic() + 5
    while True:
        payments = await list_payments(session, stack)
        pending = Counter(p["status"] for p in payments if p["status"] in PENDING)
        if not pending or time.monotonic() > deadline:
            return payments
        if time.monotonic() > next_report:
            print(f"  … still waiting on {sum(pending.values())}: {dict(pending)}")
            next_report += 5
        await asyncio.sleep(0.5)


async def wait_callbacks_done(session: aiohttp.ClientSession, stack: Stack, timeout_s: float) -> dict[str, Any]:
    """Simulator stats once every scheduled callback copy was acknowledged or given up on."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await get_json(session, f"{stack.sim_url}/sim/stats")
        calls = stats["callbacks"]
        if calls["sent"] + calls["dropped"] >= calls["scheduled"] + calls["duplicated"]:
            return stats
        if time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.3)


async def database_counts(database_url: str) -> dict[str, int]:
    """Ledger-side numbers, taken once the callback queue has stopped moving."""
    queries = {
        "orders": "SELECT count(*) FROM orders",
        "callbacks": "SELECT count(*) FROM callbacks",
        "rejected": "SELECT count(*) FROM rejected_callbacks",
        "ledger_paid": "SELECT count(*) FROM payments WHERE status = 'paid'",
        # Paid orders whose ledger row is missing or reports other amounts than were ordered.
        "ledger_mismatch": "SELECT count(*) FROM orders o LEFT JOIN payments p USING (merchant_id, order_id) "
        "WHERE o.paid_amount IS NOT NULL AND (p.id IS NULL OR p.amount <> o.amount OR p.tip <> o.tip)",
        "attempts": "SELECT count(*) FROM submission_attempts",
        "queries": "SELECT count(*) FROM submission_attempts WHERE action = 'STATUS_QUERY'",
        "lost_answers": "SELECT count(*) FROM submission_attempts WHERE error = 'timeout'",
        "http_5xx": "SELECT count(*) FROM submission_attempts WHERE error LIKE 'http_5%'",
        "processing": "SELECT count(*) FROM submission_attempts WHERE rsp_code = 'PROCESSING'",
    }
    conn = await asyncpg.connect(database_url)
    try:
        previous: dict[str, int] = {}
        for _ in range(20):
            counts = {name: int(await conn.fetchval(sql)) for name, sql in queries.items()}
            if counts == previous:
                return counts
            previous = counts
            await asyncio.sleep(0.5)
        return previous
    finally:
        await conn.close()


def reconcile(payments: Sequence[dict[str, Any]], sim_orders: Sequence[dict[str, Any]]) -> list[str]:
    """Where the gateway's truth and ours disagree about money having moved."""
    truth = {order["order_id"]: order["status"] for order in sim_orders if order["merchant_id"] == MERCHANT}
    problems = []
    for payment in payments:
        gateway = truth.get(payment["id"])
        ours_paid, gateway_paid = payment["status"] in LEDGER_PAID, gateway in GATEWAY_PAID
        if ours_paid != gateway_paid and payment["status"] not in PENDING:
            problems.append(f"{payment['id']}: ours {payment['status']}, gateway {gateway or 'no order'}")
        if ours_paid and payment["paid_amount"] != payment["amount"]:
            problems.append(f"{payment['id']}: {payment['paid_amount']} paid for an order of {payment['amount']}")
    ours = {payment["id"] for payment in payments}
    problems += [f"{oid}: gateway has an order we never stored" for oid in sorted(set(truth) - ours)]
    return problems
