"""The payments store: orders and refunds taken, claimed, sent, recorded and moved along (every query of the domain)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ottpay.codes import GatewayReply
from ottpay.finish_time import parse_finish_time
from ottrecon import db
from ottrecon.payments import statuses
from ottrecon.payments.submission import OrderFacts, Transition

# Store a new order, due for submission now; an existing idempotency key inserts nothing.
INSERT_ORDER = """
INSERT INTO orders (
    merchant_id, order_id, kind, biz_type, amount, tip, sale_num, auth_code,
    idempotency_key, request_sha256, next_check_at
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
ON CONFLICT ON CONSTRAINT orders_idempotency_key DO NOTHING
RETURNING *
"""
# The unique index (sql/0010) by which a merchant's wallet code makes at most one PASSIVEPAY order.
AUTH_CODE_KEY = "orders_auth_code_key"
# The order a wallet code was used for (the one orders_auth_code_key holds).
ORDER_BY_AUTH_CODE = """
SELECT * FROM orders WHERE merchant_id = $1 AND auth_code = $2 AND kind = 'PASSIVEPAY' AND NOT auth_code_repeat
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
# Lease due orders in the given statuses to this worker; SKIP LOCKED keeps concurrent workers
# (and arq cron firing on every worker) from ever handling the same order twice at once.
CLAIM_DUE_ORDERS = """
UPDATE orders SET lease_until = now() + make_interval(secs => $2)
WHERE id IN (
    SELECT id FROM orders
    WHERE next_check_at <= now() AND status = ANY($3::text[]) AND (lease_until IS NULL OR lease_until < now())
    ORDER BY next_check_at LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING id
"""
# The same for one order (the job the API enqueues right after creating it).
CLAIM_ORDER = """
UPDATE orders SET lease_until = now() + make_interval(secs => $2)
WHERE id = (
    SELECT id FROM orders
    WHERE id = $1 AND next_check_at <= now() AND (lease_until IS NULL OR lease_until < now())
    FOR UPDATE SKIP LOCKED
)
RETURNING id
"""
# An order with its last payment-side attempt (refund attempts are not part of its state machine).
LOAD_ORDER = """
SELECT o.*, a.action AS last_action, a.outcome AS last_outcome, a.sent AS last_sent, a.not_found AS last_not_found,
       EXISTS (
           SELECT 1 FROM submission_attempts s
           WHERE s.order_ref = o.id AND s.refund_ref IS NULL AND s.outcome = 'success' AND NOT s.not_found
       ) AS accepted
FROM orders o
LEFT JOIN LATERAL (
    SELECT action, outcome, sent, not_found FROM submission_attempts
    WHERE order_ref = o.id AND refund_ref IS NULL ORDER BY id DESC LIMIT 1
) a ON true
WHERE o.id = $1
"""
# Every request sent to OTT Pay, for finance's audit trail (no secrets: no keys, no auth code).
RECORD_ATTEMPT = """
INSERT INTO submission_attempts (
    order_ref, refund_ref, action, outcome, rsp_code, rsp_msg, error, sent, gateway_status, not_found,
    started_at, latency_ms, data
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)
"""
# A payment request about to be sent, committed before it leaves: if the worker dies (or loses Postgres) before its
# answer is recorded, the order's last attempt says "sent, outcome unknown", so the next step is a query, never a
# re-send or an expiry (PROTOCOL §5: query before any resubmission). The answer's own row replaces it.
RECORD_IN_FLIGHT = """
INSERT INTO submission_attempts (order_ref, action, outcome, error, sent, started_at, latency_ms)
VALUES ($1, $2, 'unknown', 'no answer recorded (yet): the request is out, or its worker stopped or lost Postgres',
        true, $3, 0)
RETURNING id
"""
FORGET_IN_FLIGHT = "DELETE FROM submission_attempts WHERE id = $1"
# Apply a transition; the status only ever rises in rank, whatever arrived meanwhile (a callback).
APPLY_TRANSITION = """
UPDATE orders SET
    status = CASE WHEN order_status_rank($2) > order_status_rank(status) THEN $2 ELSE status END,
    status_reason = CASE WHEN order_status_rank($2) >= order_status_rank(status) THEN $3 ELSE status_reason END,
    code_url = coalesce(code_url, $4),
    paid_amount = coalesce(paid_amount, $5),
    paid_source = CASE WHEN paid_source IS NULL AND $5::int8 IS NOT NULL THEN $6 ELSE paid_source END,
    paid_at = CASE WHEN paid_at IS NULL AND $5::int8 IS NOT NULL THEN now() ELSE paid_at END,
    next_check_at = CASE WHEN $7::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $7) END,
    check_attempts = check_attempts + $9,
    unpaid_flagged_at = CASE WHEN $8 THEN coalesce(unpaid_flagged_at, now()) ELSE unpaid_flagged_at END,
    given_up_at = CASE WHEN $10 THEN coalesce(given_up_at, now()) ELSE given_up_at END,
    lease_until = NULL,
    updated_at = now()
WHERE id = $1
RETURNING status, check_attempts, next_check_at
"""
# A payment proven by a PASSIVEPAY response or a status query (a callback may already have it). The
# gateway's trade_time is kept raw and parsed like a callback's finish_time (Beijing time, decision 0007).
RECORD_PAYMENT = """
INSERT INTO payments (merchant_id, order_id, status, amount, tip, bizpay_order_id, finish_time_raw, finish_time, source)
VALUES ($1, $2, 'paid', $3, $4, $5, $6, $7, $8)
ON CONFLICT ON CONSTRAINT payments_merchant_order_key DO NOTHING
"""
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
# A step that decided there was nothing to do gives its lease back and leaves no check due.
RELEASE_ORDER = "UPDATE orders SET lease_until = NULL, next_check_at = NULL WHERE id = $1"
# Orders that may still be paid: not final, no money yet (order_status_rank below 'declined').
WAITING = sorted(str(s) for s in statuses.WAITING)
# Buckets by created_at: (key, label, clause). Boundaries belong to the older bucket (15 min is 15-60 min).
UNPAID_BUCKETS = (
    ("lt15m", "< 15 min", "o.created_at > now() - interval '15 minutes'"),
    (
        "15m-1h",
        "15-60 min",
        "o.created_at <= now() - interval '15 minutes' AND o.created_at > now() - interval '1 hour'",
    ),
    ("1h-24h", "1-24 h", "o.created_at <= now() - interval '1 hour' AND o.created_at > now() - interval '24 hours'"),
    ("gt24h", "> 24 h", "o.created_at <= now() - interval '24 hours'"),
)
_UNPAID_BUCKET = " ".join(f"WHEN {clause} THEN '{key}'" for key, _, clause in UNPAID_BUCKETS)
# Count, money expected and orders given up per bucket (orders_status_idx: status, created_at).
UNPAID_SUMMARY = f"""
SELECT CASE {_UNPAID_BUCKET} END AS bucket, count(*) AS n, coalesce(sum(o.amount + o.tip), 0)::int8 AS expected,
       count(*) FILTER (WHERE o.given_up_at IS NOT NULL) AS given_up
FROM orders o WHERE o.status = ANY ($1::text[])
GROUP BY 1
"""
# Oldest first by keyset on (created_at, id); the bucket and merchant clauses are fixed text.
UNPAID_LIST = """
SELECT o.id, o.merchant_id, o.order_id, o.kind, o.biz_type, o.amount, o.tip, o.status, o.status_reason,
       o.created_at, o.unpaid_flagged_at, o.given_up_at, o.check_attempts, now() - o.created_at AS age
FROM orders o
WHERE o.status = ANY ($1::text[]) {filters}
ORDER BY o.created_at, o.id
LIMIT {limit}
"""


def facts(row: asyncpg.Record) -> OrderFacts:
    return OrderFacts(
        kind=row["kind"],
        status=row["status"],
        amount=row["amount"],
        tip=row["tip"],
        created_at=row["created_at"],
        check_attempts=row["check_attempts"],
        last_action=row["last_action"],
        last_outcome=row["last_outcome"],
        last_sent=row["last_sent"] if row["last_sent"] is not None else True,
        last_not_found=bool(row["last_not_found"]),
        accepted=bool(row["accepted"]),
        has_code_url=row["kind"] != "ACTIVEPAY" or row["code_url"] is not None,
    )


async def claim_due(conn: db.Connection, statuses: Sequence[str], limit: int, lease_s: float) -> list[int]:
    return [row["id"] for row in await conn.fetch(CLAIM_DUE_ORDERS, limit, lease_s, list(statuses))]


async def claim(conn: db.Connection, order_pk: int, lease_s: float) -> bool:
    return await conn.fetchval(CLAIM_ORDER, order_pk, lease_s) is not None


async def record_attempt(
    conn: db.Connection, order_pk: int, reply: GatewayReply, started_at: datetime, refund_pk: int | None = None
) -> None:
    await conn.execute(
        RECORD_ATTEMPT,
        order_pk,
        refund_pk,
        reply.action,
        str(reply.outcome),
        reply.rsp_code,
        (reply.rsp_msg or "")[:500] or None,
        reply.error,
        reply.sent,
        reply.data.get("order_status") if reply.action == "STATUS_QUERY" else None,
        reply.not_found,
        started_at,
        reply.latency_ms,
        # Verified gateway data (channel id, amounts): evidence for reconciliation; holds no secrets.
        json.dumps(reply.data, ensure_ascii=False) if reply.data else None,
    )


async def record_in_flight(conn: db.Connection, order_pk: int, action: str, started_at: datetime) -> int:
    """Say, before sending, that a payment request for the order is out; returns the marker's attempt id."""
    attempt_id: int = await conn.fetchval(RECORD_IN_FLIGHT, order_pk, action, started_at)
    return attempt_id


async def forget_in_flight(conn: db.Connection, attempt_id: int) -> None:
    """Drop the marker once the request's answer (or its certain failure) is recorded in the same transaction."""
    await conn.execute(FORGET_IN_FLIGHT, attempt_id)


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


async def apply(
    conn: db.Connection, row: asyncpg.Record, transition: Transition, paid_source: str, *, counted: bool = True
) -> asyncpg.Record:
    """Apply a transition to the order in row inside the caller's transaction.

    An unpaid flag only marks the order; the reconciler turns it into an alert. A give-up stamps
    given_up_at once (the transition carries no next check, so nothing claims the order again).
    """
    result = await db.fetch_one(
        conn,
        APPLY_TRANSITION,
        row["id"],
        transition.status,
        transition.reason,
        transition.code_url,
        transition.paid_amount,
        paid_source,
        transition.next_check_in_s,
        transition.flag_unpaid,
        1 if counted else 0,
        transition.given_up,
    )
    return result


async def record_payment(conn: db.Connection, row: asyncpg.Record, amount: int, tip: int, reply: GatewayReply) -> None:
    trade_time = reply.data.get("trade_time")
    await conn.execute(
        RECORD_PAYMENT,
        row["merchant_id"],
        row["order_id"],
        amount,
        tip,
        reply.data.get("bizpay_order_id") or None,
        trade_time or None,
        parse_finish_time(trade_time) if trade_time else None,
        "response" if reply.action == "PASSIVEPAY" else "query",
    )


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


def unpaid_page(
    bucket: str | None, merchant_id: str | None, after: tuple[Any, ...] | None, limit: int
) -> tuple[str, list[Any]]:
    """UNPAID_LIST for one page of waiting orders: an age bucket, a merchant, after a (created_at, id) cursor.

    Only fixed clauses with $n placeholders are joined, never input.
    """
    args: list[Any] = [list(WAITING)]
    clauses = [clause for key, _, clause in UNPAID_BUCKETS if key == bucket]
    if merchant_id is not None:
        args.append(merchant_id)
        clauses.append(f"o.merchant_id = ${len(args)}")
    if after is not None:
        args.extend(after)
        clauses.append(f"(o.created_at, o.id) > (${len(args) - 1}, ${len(args)})")
    return UNPAID_LIST.format(filters="".join(f" AND {c}" for c in clauses), limit=int(limit)), args
