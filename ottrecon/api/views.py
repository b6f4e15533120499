"""How payments and refunds look in the API's JSON (amounts in integer cents, times ISO-8601 UTC)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ottrecon.payments.statuses import OrderStatus

CURRENCY = "CAD"
# Every status an order can have, in the order of sql/0002's order_status_rank.
STATUSES = tuple(OrderStatus)
# The notices of a 202: stored, on its way, not yet answered by the gateway. Each tells the POS not to start over
# with a new Idempotency-Key, which could take the money twice (finding 03).
NOT_HANDED_OVER = (
    "stored and due, but no worker could be asked to send it now (the job queue is unavailable): the worker's "
    "scheduled retry sends it shortly. Poll GET /api/payments/{payment_id}; to ask again use the same Idempotency-Key, "
    "never a new one"
)
STATE_UNREAD = (
    "stored as shown, but its current state could not be read back (the database became unavailable): a worker "
    "sends it, by the scheduled retry if need be. Poll GET /api/payments/{payment_id}; to ask again use the same "
    "Idempotency-Key, never a new one"
)


def payment_view(order: asyncpg.Record, refunds: Sequence[asyncpg.Record] = ()) -> dict[str, Any]:
    """Public shape of an order. Never includes the customer's auth code."""
    view: dict[str, Any] = {
        "id": order["order_id"],
        "merchant_id": order["merchant_id"],
        "kind": order["kind"],
        "biz_type": order["biz_type"],
        "amount": order["amount"],
        "tip": order["tip"],
        "currency": CURRENCY,
        "sale_num": order["sale_num"],
        "status": order["status"],
        "status_reason": order["status_reason"],
        "code_url": order["code_url"],
        "qr_svg": f"/api/payments/{order['order_id']}/qr.svg" if order["code_url"] else None,
        "paid_amount": order["paid_amount"],
        "paid_source": order["paid_source"],
        "paid_at": _time(order["paid_at"]),
        "unpaid_flagged_at": _time(order["unpaid_flagged_at"]),
        "created_at": _time(order["created_at"]),
        "updated_at": _time(order["updated_at"]),
        "refunds": [refund_view(r, order["order_id"]) for r in refunds],
    }
    return view


def refund_view(refund: asyncpg.Record, payment_id: str) -> dict[str, Any]:
    return {
        "id": refund["refund_order_id"],
        "payment_id": payment_id,
        "amount": refund["amount"],
        "currency": CURRENCY,
        "status": refund["status"],
        "status_reason": refund["status_reason"],
        "created_at": _time(refund["created_at"]),
        "updated_at": _time(refund["updated_at"]),
    }


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
