"""The orders store: orders taken, claimed, sent, recorded and moved along (refunds: refund_store)."""

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
