"""SQL for the payments API; the only API module that knows asyncpg."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from api.errors import DatabaseUnavailable
from ottrecon.db import TRANSIENT_ERRORS

# Store a new order, due for submission now; an existing idempotency key inserts nothing.
INSERT_ORDER = """
INSERT INTO orders (
    merchant_id, order_id, kind, biz_type, amount, tip, sale_num, auth_code,
    idempotency_key, request_sha256, next_check_at
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
ON CONFLICT ON CONSTRAINT orders_idempotency_key DO NOTHING
RETURNING *
"""
# The order an idempotency key was first used for.
ORDER_BY_KEY = "SELECT * FROM orders WHERE merchant_id = $1 AND idempotency_key = $2"
# One order by its public id (our OTT Pay order id).
ORDER_BY_ID = "SELECT * FROM orders WHERE order_id = $1"
# A page of orders, newest first, optionally one status (keyset on id: constant cost per page).
LIST_ORDERS = """
SELECT * FROM orders
WHERE ($1::text IS NULL OR status = $1) AND ($2::int8 IS NULL OR id < $2)
ORDER BY id DESC LIMIT $3
"""
# Refunds of an order, oldest first.
REFUNDS_OF = "SELECT * FROM refunds WHERE order_ref = $1 ORDER BY id"
# Lock the order while deciding whether a refund fits, so two refunds cannot both pass the check.
LOCK_ORDER = "SELECT * FROM orders WHERE order_id = $1 FOR UPDATE"
# Money already refunded or on its way back (failed refunds do not count).
REFUNDED_OR_PENDING = "SELECT coalesce(sum(amount), 0) FROM refunds WHERE order_ref = $1 AND status <> 'failed'"
INSERT_REFUND = """
INSERT INTO refunds (order_ref, merchant_id, refund_order_id, amount, idempotency_key, request_sha256, next_check_at)
VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT ON CONSTRAINT refunds_idempotency_key DO NOTHING
RETURNING *
"""
REFUND_BY_KEY = "SELECT * FROM refunds WHERE order_ref = $1 AND idempotency_key = $2"
REFUND_BY_ID = "SELECT * FROM refunds WHERE id = $1"


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """The worker's list of connection-level failures, raised as the api's DatabaseUnavailable (503)."""
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise DatabaseUnavailable(f"Postgres unavailable: {exc.__class__.__name__}") from exc


async def create_pool(dsn: str) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, min_size=0, max_size=5, command_timeout=10, timeout=5)
    return pool
