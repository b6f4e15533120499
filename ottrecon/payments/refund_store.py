"""The refunds store: refunds taken, claimed and settled, the order moved to (partially) refunded."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ottrecon import db

# Refunds of an order, oldest first.
REFUNDS_OF = "SELECT * FROM refunds WHERE order_ref = $1 ORDER BY id"
# Lock the order while deciding whether a refund fits, so two refunds cannot both pass the check.
LOCK_ORDER = "SELECT * FROM orders WHERE order_id = $1 FOR UPDATE"
# The tip the payment's evidence reported (a PASSIVEPAY answer, a query, a callback); NULL before any.
PAID_TIP = "SELECT tip FROM payments WHERE merchant_id = $1 AND order_id = $2"
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
CLAIM_REFUND = """
UPDATE refunds SET lease_until = now() + make_interval(secs => $2)
WHERE id = (
    SELECT id FROM refunds
    WHERE id = $1 AND status = 'pending' AND next_check_at <= now() AND (lease_until IS NULL OR lease_until < now())
    FOR UPDATE SKIP LOCKED
)
RETURNING id
"""
CLAIM_DUE_REFUNDS = """
UPDATE refunds SET lease_until = now() + make_interval(secs => $2)
WHERE id IN (
    SELECT id FROM refunds
    WHERE status = 'pending' AND next_check_at <= now() AND (lease_until IS NULL OR lease_until < now())
    ORDER BY next_check_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING id
"""
# The refund, its order, and whether a REFUND for it was already sent (possibly received).
LOAD_REFUND = """
SELECT r.*, o.order_id AS ori_order_id, o.paid_amount, o.amount AS order_amount,
       EXISTS (SELECT 1 FROM submission_attempts a WHERE a.refund_ref = r.id AND a.sent) AS sent_before
FROM refunds r JOIN orders o ON o.id = r.order_ref WHERE r.id = $1
"""
# A succeeded refund is stamped with when it happened ($5: the gateway's refund_time, else now), the
# instant its business date is taken from (decision 0022).
UPDATE_REFUND = """
UPDATE refunds SET status = $2, status_reason = $3,
    next_check_at = CASE WHEN $4::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $4) END,
    check_attempts = check_attempts + 1, lease_until = NULL, updated_at = now(),
    succeeded_at = CASE WHEN $2 = 'succeeded' THEN coalesce($5::timestamptz, now()) END
WHERE id = $1 AND status = 'pending'
"""
# Taken first by the transaction settling a refund, so that settlements of one order's refunds run one after
# another and each computes the status from all of them (finding 08: two settling at once each summed only its
# own and a fully refunded order stayed partially_refunded). NO KEY UPDATE: like FOR UPDATE it waits for
# create_refund's lock and for other settlements, but not for the KEY SHARE locks that inserting rows referring
# to the order (attempts, refunds) take.
LOCK_ORDER_FOR_REFUND = "SELECT id FROM orders WHERE id = $1 FOR NO KEY UPDATE"
# After a refund succeeded: the order (and its payment) move to partially or fully refunded. The statement's
# snapshot must include every settled refund: run it under LOCK_ORDER_FOR_REFUND (settle_refund does).
MARK_ORDER_REFUNDED = """
WITH total AS (
    SELECT coalesce(sum(amount), 0) AS refunded FROM refunds WHERE order_ref = $1 AND status = 'succeeded'
), target AS (
    SELECT CASE WHEN total.refunded >= least(o.paid_amount, o.amount) + least(
                    (SELECT p.tip FROM payments p WHERE p.merchant_id = o.merchant_id AND p.order_id = o.order_id),
                    o.tip)  -- refundable(), in SQL (least() skips a NULL)
                THEN 'refunded' ELSE 'partially_refunded' END
        AS status, o.merchant_id, o.order_id
    FROM orders o, total WHERE o.id = $1
), moved AS (
    UPDATE orders o SET status = target.status, updated_at = now() FROM target
    WHERE o.id = $1 AND order_status_rank(target.status) > order_status_rank(o.status)
)
UPDATE payments p SET status = target.status, updated_at = now() FROM target
WHERE p.merchant_id = target.merchant_id AND p.order_id = target.order_id
  AND payment_status_rank(target.status) > payment_status_rank(p.status)
"""
SUCCEEDED_TOTAL = "SELECT coalesce(sum(amount), 0) FROM refunds WHERE order_ref = $1 AND status = 'succeeded'"


def refundable(order: asyncpg.Record, paid_tip: int | None) -> int:
    """What a paid order's refunds may add up to: the amount and the tip paid, neither more than was ordered.

    A callback is authentic yet may report another amount or tip than the order (the ledger flags amount_mismatch
    for a person); refunding more than was ordered on its word would only be refused by the gateway after a 201.
    The tip is refundable too: the customer paid amount + tip (decision 0009). paid_tip: PAID_TIP (None: the
    ordered tip). MARK_ORDER_REFUNDED says the same in SQL.
    """
    paid = order["paid_amount"] if order["paid_amount"] is not None else order["amount"]
    tip = order["tip"] if paid_tip is None else min(paid_tip, order["tip"])
    return int(min(paid, order["amount"]) + tip)


async def lock_order_for_refund(conn: db.Connection, order_pk: int) -> None:
    """Lock the order whose refund is settling; call it first in the transaction (before any row referring to the
    order is written, which would hold a lock another settlement waits for)."""
    await conn.execute(LOCK_ORDER_FOR_REFUND, order_pk)


async def settle_refund(
    conn: db.Connection,
    refund_pk: int,
    order_pk: int,
    status: str,
    reason: str | None,
    next_check_in_s: float | None,
    refunded_at: datetime | None,
) -> None:
    """Record a refund step and, once it succeeded, move the order and its payment to what all of the order's
    succeeded refunds add up to. In the caller's transaction, after lock_order_for_refund; the status only rises."""
    await conn.execute(UPDATE_REFUND, refund_pk, status, reason, next_check_in_s, refunded_at)
    if status == "succeeded":
        await conn.execute(MARK_ORDER_REFUNDED, order_pk)
