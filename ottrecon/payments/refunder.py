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
from ottrecon.payments import refund_store, store
from ottrecon.payments.gateway import Gateway
from ottrecon.payments.submission import Policy
from ottrecon.payments.submitter import OnReply, ignore_reply

logger = logging.getLogger("ottrecon.refunder")


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
                if await conn.fetchval(refund_store.CLAIM_REFUND, refund_pk, self._lease_s) is None:
                    return None
            return await self._handle(refund_pk)

    async def process_due(self, limit: int) -> int:
        """Handle up to limit due refunds; return how many. One failing refund holds none of the others back (the
        failure is logged; its lease brings it back), as in Submitter.process_due."""
        async with db.translate_errors():
            async with self._pool.acquire() as conn:
                refund_pks = [r["id"] for r in await conn.fetch(refund_store.CLAIM_DUE_REFUNDS, limit, self._lease_s)]
            for refund_pk in refund_pks:
                # One after another: refunds of one order each recompute its refunded total.
                try:
                    await self._handle(refund_pk)
                except db.TRANSIENT_ERRORS:
                    raise  # Postgres is away: the rest would fail alike (DatabaseUnavailable); leases bring them back
                except Exception as exc:
                    # The lease expires and the refund is due again: nothing is lost, but say so.
                    logger.error("refund step failed", exc_info=exc, extra={"refund_pk": refund_pk})
        return len(refund_pks)

    async def _handle(self, refund_pk: int) -> RefundResult:
        async with self._pool.acquire() as conn:
            row = await db.fetch_one(conn, refund_store.LOAD_REFUND, refund_pk)
        started = datetime.now(UTC)
        client = self._gateway.client_for(row["merchant_id"])
        replies: list[GatewayReply] = []
        confirm: GatewayReply | None = None
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
                # Our earlier send of this very refund id arrived: confirm the gateway's refunded total (below,
                # under the order's lock, against every refund settled so far).
                confirm = await client.status_query(row["ori_order_id"])
                replies.append(confirm)
                self._on_reply(confirm)
        async with self._pool.acquire() as conn, conn.transaction():
            # First of all: refunds of one order settle one at a time, each seeing the others' (finding 08).
            await refund_store.lock_order_for_refund(conn, row["order_ref"])
            if confirm is not None:
                result = await self._confirm(conn, row, confirm)
            for reply in replies:
                await store.record_attempt(conn, row["order_ref"], reply, started, refund_pk)
            await refund_store.settle_refund(
                conn,
                refund_pk,
                row["order_ref"],
                result.status,
                result.reason,
                result.next_check_in_s,
                result.refunded_at,
            )
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

    async def _confirm(self, conn: db.Connection, row: asyncpg.Record, query: GatewayReply) -> RefundResult:
        """Inside the settling transaction, the order locked: `already` cannot miss a refund settling meanwhile."""
        later = self._policy.backoff(row["check_attempts"] + 1, self._rng)
        try:
            refunded = parse_cents(query.data.get("refund_amount", ""))
        except ValueError:
            return RefundResult("pending", "refund id already used; gateway refund total unknown", later)
        already = await conn.fetchval(refund_store.SUCCEEDED_TOTAL, row["order_ref"])
        if refunded >= already + row["amount"]:
            return RefundResult("succeeded", "confirmed by status query after ORDER_USED", None)
        return RefundResult("pending", f"refund id used but gateway refunded total is {refunded}", later)
