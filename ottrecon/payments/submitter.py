"""Carries orders through the submission state machine: claim, decide, send, record, apply."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

from ottpay.codes import GatewayReply
from ottpay.messages import parse_cents
from ottrecon import db
from ottrecon.payments import store
from ottrecon.payments.gateway import Gateway
from ottrecon.payments.submission import Policy, Step, Transition, after_reply, next_step

if TYPE_CHECKING:
    from ottpay.client import OttPayClient

logger = logging.getLogger("ottrecon.submitter")

# Told of every answer the gateway gave (the worker counts them in its metrics); the domain knows no metrics.
OnReply = Callable[[GatewayReply], None]


def ignore_reply(reply: GatewayReply) -> None:
    """The default OnReply: nobody is listening."""


class Submitter:
    """Moves orders forward. Every public method is idempotent and safe on several workers at once:
    an order is only handled under a lease taken with FOR UPDATE SKIP LOCKED."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        gateway: Gateway,
        policy: Policy,
        *,
        callback_url: str | None,
        lease_s: float,
        rng: random.Random | None = None,
        on_reply: OnReply = ignore_reply,
    ) -> None:
        self._pool = pool
        self._gateway = gateway
        self._policy = policy
        self._callback_url = callback_url
        self._lease_s = lease_s
        self._rng = rng or random.Random()
        self._on_reply = on_reply

    async def process(self, order_pk: int) -> Transition | None:
        """Handle one order if it is due and nobody else holds it; None when there was nothing to do."""
        async with db.translate_errors():
            async with self._pool.acquire() as conn:
                if not await store.claim(conn, order_pk, self._lease_s):
                    return None
            return await self._handle(order_pk)

    async def process_due(self, statuses: Sequence[str], limit: int) -> int:
        """Handle up to limit due orders in the given statuses, concurrently; return how many."""
        async with db.translate_errors():
            async with self._pool.acquire() as conn:
                order_pks = await store.claim_due(conn, statuses, limit, self._lease_s)
            results = await asyncio.gather(*(self._handle(pk) for pk in order_pks), return_exceptions=True)
        for order_pk, result in zip(order_pks, results, strict=True):
            if isinstance(result, BaseException):
                # The lease expires and the order is due again: nothing is lost, but say so.
                logger.error("order step failed", exc_info=result, extra={"order_pk": order_pk})
        return len(order_pks)

    async def _handle(self, order_pk: int) -> Transition | None:
        async with self._pool.acquire() as conn:
            row = await db.fetch_one(conn, store.LOAD_ORDER, order_pk)
        now = datetime.now(UTC)
        order = store.facts(row)
        step = next_step(order, now, self._policy)
        reply: GatewayReply | None = None
        in_flight: int | None = None
        if step == Step.NOTHING:
            async with self._pool.acquire() as conn:
                await conn.execute(store.RELEASE_ORDER, order_pk)
            return None
        client = self._gateway.client_for(row["merchant_id"])
        if step == Step.EXPIRE:
            transition = Transition("expired", "the payment code expired before the gateway received the order")
        elif client is None:
            transition = Transition("failed", "merchant has no sign key or operator id configured")
        elif step == Step.SUBMIT and row["kind"] == "ACTIVEPAY" and not self._callback_url:
            transition = Transition("failed", "OTTRECON_CALLBACK_URL is not configured")
        else:
            in_flight = await self._mark_in_flight(step, order_pk, row["kind"], now)
            reply = await self._send(step, client, row)
            self._on_reply(reply)
            transition = after_reply(order, reply, now, self._policy, self._rng)
        async with self._pool.acquire() as conn, conn.transaction():
            if in_flight is not None:
                await store.forget_in_flight(conn, in_flight)
            if reply is not None:
                await store.record_attempt(conn, order_pk, reply, now)
            await store.apply(conn, row, transition, _paid_source(reply), counted=reply is not None)
            if transition.paid_amount is not None and reply is not None:
                await store.record_payment(conn, row, transition.paid_amount, _tip(reply, row["tip"]), reply)
        _log(row, step, reply, transition)
        return transition

    async def _mark_in_flight(self, step: Step, order_pk: int, kind: str, now: datetime) -> int | None:
        """Before a PASSIVEPAY or ACTIVEPAY leaves, commit that it is out; None for a query (asking is harmless).

        Without it a worker killed while the gateway charges the customer left no trace of the request: once its
        lease lapsed the order looked never sent, and a PASSIVEPAY past its code's lifetime was expired although
        the customer had paid (found by the independent payment-faults test).
        """
        if step != Step.SUBMIT:
            return None
        async with self._pool.acquire() as conn:
            return await store.record_in_flight(conn, order_pk, kind, now)

    async def _send(self, step: Step, client: OttPayClient, row: asyncpg.Record) -> GatewayReply:
        if step == Step.QUERY:
            return await client.status_query(row["order_id"])
        if row["kind"] == "PASSIVEPAY":
            return await client.passive_pay(
                order_id=row["order_id"],
                amount=row["amount"],
                tip=row["tip"],
                auth_code=row["auth_code"],
                biz_type=row["biz_type"],
                sale_num=row["sale_num"],
            )
        assert self._callback_url is not None
        return await client.active_pay(
            order_id=row["order_id"],
            amount=row["amount"],
            tip=row["tip"],
            biz_type=row["biz_type"],
            call_back_url=self._callback_url,
        )


def _paid_source(reply: GatewayReply | None) -> str:
    return "response" if reply is not None and reply.action == "PASSIVEPAY" else "query"


def _tip(reply: GatewayReply, ordered: int) -> int:
    try:
        return parse_cents(reply.data["tip"])
    except (KeyError, ValueError):
        return ordered


def _log(row: asyncpg.Record, step: Step, reply: GatewayReply | None, transition: Transition) -> None:
    logger.info(
        "order step",
        extra={
            "merchant_id": row["merchant_id"],
            "order_id": row["order_id"],
            "step": str(step),
            "rsp_code": reply.rsp_code if reply else None,
            "outcome": str(reply.outcome) if reply else None,
            "status": transition.status,
            "reason": transition.reason,
        },
    )
