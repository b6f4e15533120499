"""Scheduled reconciliation jobs: keep the ledger current and alerts delivered; replay rejected callbacks on request."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ottrecon.callbacks.replay import replay_one, report_configured_merchants
from ottrecon.errors import DatabaseUnavailable
from ottrecon.reconciliation.delivery import deliver_due_alerts
from ottrecon.reconciliation.reconcile import reconcile_pending

if TYPE_CHECKING:
    from worker.context import JobContext

logger = logging.getLogger("ottrecon.reconcile")

# One tick reconciles at most this many batches, so a huge backlog cannot hold a job slot for long.
MAX_BATCHES_PER_TICK = 50


async def reconcile_ledger(ctx: JobContext) -> int:
    """Scheduled: reconcile every key whose evidence changed; returns the number of keys.

    Safe on every worker at once (disjoint batches via SKIP LOCKED); a database outage only
    delays it to the next tick, since the changed keys stay queued in Postgres.
    """
    state = ctx["recon"]
    try:
        report = await reconcile_pending(
            state.pool,
            business_tz=state.business_tz,
            max_batches=MAX_BATCHES_PER_TICK,
            concurrency=state.reconcile_concurrency,
        )
    except DatabaseUnavailable:
        logger.warning("postgres unavailable; reconciliation skipped")
        return 0
    return report.keys


async def deliver_alerts(ctx: JobContext) -> int:
    """Scheduled: send undelivered alerts (one by one, or one summary in a storm); returns how many.

    Alerts whose delivery failed are retried on later ticks with backoff: delayed, never lost.
    """
    state = ctx["recon"]
    try:
        report = await deliver_due_alerts(
            state.pool,
            state.http,
            state.alert_webhook_url,
            storm_threshold=state.alert_storm_threshold,
            display_tz=state.display_tz,
            currency=state.currency,
        )
    except DatabaseUnavailable:
        logger.warning("postgres unavailable; alert delivery skipped")
        return 0
    return report.delivered


async def replay_rejected_callback(ctx: JobContext, rejected_id: int, actor: str) -> str | None:
    """Replay one rejected callback on request (the console's button); audited with the actor."""
    state = ctx["recon"]
    try:
        return await replay_one(state.pool, state.merchants, rejected_id, actor=actor)
    except DatabaseUnavailable:
        logger.warning("postgres unavailable; replay not done", extra={"rejected_id": rejected_id})
        return None


async def report_merchants(ctx: JobContext) -> None:
    """Scheduled: publish which merchants this worker holds keys for (ids only)."""
    state = ctx["recon"]
    try:
        await report_configured_merchants(state.pool, state.merchants)
    except DatabaseUnavailable:
        logger.warning("postgres unavailable; configured merchants not reported")
