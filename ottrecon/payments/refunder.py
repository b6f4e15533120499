"""Carries refunds to OTT Pay: each refund has its own order id, so a re-send can never refund twice."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from ottpay.codes import GatewayReply, Outcome
from ottpay.finish_time import parse_finish_time
from ottpay.messages import parse_cents
from ottrecon import db
from ottrecon.payments import store
from ottrecon.payments.gateway import Gateway
from ottrecon.payments.submission import Policy
from ottrecon.payments.submitter import OnReply, ignore_reply

logger = logging.getLogger("ottrecon.refunder")

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
# After a refund succeeded: the order (and its payment) move to partially or fully refunded.
MARK_ORDER_REFUNDED = """
WITH total AS (
    SELECT coalesce(sum(amount), 0) AS refunded FROM refunds WHERE order_ref = $1 AND status = 'succeeded'
), target AS (
    SELECT CASE WHEN total.refunded >= coalesce(o.paid_amount, o.amount) + o.tip
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


@dataclass(frozen=True)
class RefundResult:
    status: str
    reason: str | None
    next_check_in_s: float | None
    # When the gateway says the refund happened (its refund_time); None: when we learned it succeeded.
    refunded_at: datetime | None = None


class Refunder:
    """Sends pending refunds; idempotent and lease-guarded like the Submitter."""

    def __init__(
        self, pool: asyncpg.Pool, gateway: Gateway, policy: Policy, *, lease_s: float, on_reply: OnReply = ignore_reply
    ) -> None:
        self._pool = pool
        self._on_reply = on_reply
        self._gateway = gateway
        self._policy = policy
        self._lease_s = lease_s
        self._rng = random.Random()

    async def process(self, refund_pk: int) -> RefundResult | None:
        async with db.translate_errors():
            async with self._pool.acquire() as conn:
                if await conn.fetchval(CLAIM_REFUND, refund_pk, self._lease_s) is None:
                    return None
            return await self._handle(refund_pk)

    async def process_due(self, limit: int) -> int:
        async with db.translate_errors():
            async with self._pool.acquire() as conn:
                refund_pks = [r["id"] for r in await conn.fetch(CLAIM_DUE_REFUNDS, limit, self._lease_s)]
            for refund_pk in refund_pks:
                await self._handle(refund_pk)
        return len(refund_pks)

    async def _handle(self, refund_pk: int) -> RefundResult:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(LOAD_REFUND, refund_pk)
        started = datetime.now(UTC)
        client = self._gateway.client_for(row["merchant_id"])
        replies: list[GatewayReply] = []
        if client is None:
            result = RefundResult("failed", "merchant has no sign key or operator id configured", None)
        else:
            reply = await client.refund(
                ori_order_id=row["ori_order_id"], refund_order_id=row["refund_order_id"], refund_amount=row["amount"]
            )
            replies.append(reply)
            self._on_reply(reply)
            result = self._judge(row, reply)
            if reply.rsp_code == "ORDER_USED" and row["sent_before"]:
                # Our earlier send of this very refund id arrived: confirm the gateway's refunded total.
                query = await client.status_query(row["ori_order_id"])
                replies.append(query)
                self._on_reply(query)
                result = await self._confirm(row, query)
        async with self._pool.acquire() as conn, conn.transaction():
            for reply in replies:
                await store.record_attempt(conn, row["order_ref"], reply, started, refund_pk)
            await conn.execute(
                UPDATE_REFUND, refund_pk, result.status, result.reason, result.next_check_in_s, result.refunded_at
            )
            if result.status == "succeeded":
                await conn.execute(MARK_ORDER_REFUNDED, row["order_ref"])
        logger.info(
            "refund step",
            extra={
                "merchant_id": row["merchant_id"],
                "order_id": row["ori_order_id"],
                "refund_order_id": row["refund_order_id"],
                "status": result.status,
                "reason": result.reason,
            },
        )
        return result

    def _judge(self, row: asyncpg.Record, reply: GatewayReply) -> RefundResult:
        if reply.outcome == Outcome.SUCCESS:
            refund_time = reply.data.get("refund_time")
            return RefundResult("succeeded", None, None, parse_finish_time(refund_time) if refund_time else None)
        if reply.outcome in (Outcome.DECLINED, Outcome.PERMANENT):
            return RefundResult("failed", f"{reply.rsp_code}: {reply.rsp_msg or ''}".strip(), None)
        # Unknown: re-send the same refund id later; the gateway cannot apply it twice.
        later = self._policy.backoff(row["check_attempts"] + 1, self._rng)
        return RefundResult("pending", f"unknown outcome: {reply.rsp_code or reply.error}", later)

    async def _confirm(self, row: asyncpg.Record, query: GatewayReply) -> RefundResult:
        later = self._policy.backoff(row["check_attempts"] + 1, self._rng)
        try:
            refunded = parse_cents(query.data.get("refund_amount", ""))
        except ValueError:
            return RefundResult("pending", "refund id already used; gateway refund total unknown", later)
        async with self._pool.acquire() as conn:
            already = await conn.fetchval(SUCCEEDED_TOTAL, row["order_ref"])
        if refunded >= already + row["amount"]:
            return RefundResult("succeeded", "confirmed by status query after ORDER_USED", None)
        return RefundResult("pending", f"refund id used but gateway refunded total is {refunded}", later)
