"""arq jobs that take payments: one order or refund right away, and the scheduled retry and sweep."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from arq import ArqRedis

from ottrecon.errors import DatabaseUnavailable
from ottrecon.payments.statuses import SWEPT
from ottrecon.queue import PROCESS_ORDER_JOB, QUEUE_NAME

if TYPE_CHECKING:
    from worker.context import JobContext

logger = logging.getLogger("ottrecon.payments")

# A follow-up due this soon gets its own deferred job; later ones wait for the scheduled retry.
FOLLOW_UP_WITHIN_S = 10.0


async def process_order(ctx: JobContext, order_pk: int) -> str | None:
    """Take one order one step forward (submit, query or expire); idempotent, lease-guarded.

    A database outage is not retried here: the order stays due in Postgres and the
    scheduled retry_failed_submissions picks it up.
    """
    payments = ctx["payments"]
    try:
        transition = await payments.submitter.process(order_pk)
    except DatabaseUnavailable:
        logger.warning("postgres unavailable; order left for the scheduled retry", extra={"order_pk": order_pk})
        return None
    if transition is None:
        return None
    if transition.next_check_in_s is not None and transition.next_check_in_s <= FOLLOW_UP_WITHIN_S:
        await _follow_up(ctx["redis"], order_pk, transition.next_check_in_s)
    return transition.status


async def process_refund(ctx: JobContext, refund_pk: int) -> str | None:
    """Send one pending refund; idempotent, lease-guarded, retried by the scheduled job when unknown."""
    payments = ctx["payments"]
    try:
        result = await payments.refunder.process(refund_pk)
    except DatabaseUnavailable:
        logger.warning("postgres unavailable; refund left for the scheduled retry", extra={"refund_pk": refund_pk})
        return None
    return result.status if result else None


async def retry_failed_submissions(ctx: JobContext) -> int:
    """Scheduled: orders whose submission is due again (unknown outcome, pre-send failure) and pending refunds.

    Safe on every worker at once: each order is claimed with FOR UPDATE SKIP LOCKED.
    """
    payments = ctx["payments"]
    try:
        orders = await payments.submitter.process_due(["pending"], payments.batch)
        refunds = await payments.refunder.process_due(payments.batch)
    except DatabaseUnavailable:
        logger.warning("postgres unavailable; scheduled retry skipped")
        return 0
    return orders + refunds


async def sweep_unpaid_orders(ctx: JobContext) -> int:
    """Scheduled: query ACTIVEPAY orders still without a payment (recovers lost callbacks, flags unpaid)."""
    payments = ctx["payments"]
    try:
        return await payments.submitter.process_due(sorted(str(s) for s in SWEPT), payments.batch)
    except DatabaseUnavailable:
        logger.warning("postgres unavailable; sweep skipped")
        return 0


async def _follow_up(redis: ArqRedis, order_pk: int, delay_s: float) -> None:
    await redis.enqueue_job(PROCESS_ORDER_JOB, order_pk, _queue_name=QUEUE_NAME, _defer_by=max(delay_s, 0.01))
