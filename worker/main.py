"""Builds the arq Worker for callback ingestion from WorkerSettings (the worker's composition)."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from arq import Worker, cron, func
from arq.connections import RedisSettings

from worker import db
from worker.errors import DatabaseUnavailable
from worker.gateway import Gateway
from worker.jobs import WorkerState, ingest_callbacks
from worker.metrics import REFRESH_EVERY_S, refresh_metrics, timed
from worker.migrations import check_schema
from worker.payment_jobs import (
    PaymentState,
    process_order,
    process_refund,
    retry_failed_submissions,
    sweep_unpaid_orders,
)
from worker.queue import (
    INGEST_JOB,
    PROCESS_ORDER_JOB,
    PROCESS_REFUND_JOB,
    QUEUE_NAME,
    REPLAY_REJECTED_JOB,
    deserialize,
    serialize,
)
from worker.recon_jobs import (
    ReconState,
    deliver_alerts,
    reconcile_ledger,
    replay_rejected_callback,
    report_merchants,
)
from worker.refunder import Refunder
from worker.settings import WorkerSettings
from worker.submitter import Submitter
from worker.writer import BatchWriter

logger = logging.getLogger("ottrecon.worker")


def create_worker(settings: WorkerSettings, **overrides: Any) -> Worker:
    """An arq Worker for the callback queue; overrides (burst=True, poll_delay=0…) are for tests."""

    async def startup(ctx: dict[str, Any]) -> None:
        pool = await db.create_pool(settings.database_url, settings.db_pool_max)
        await _check_schema_if_reachable(pool)
        writer = BatchWriter(lambda v, r: db.record(pool, v, r), settings.write_batch_max)
        ctx["state"] = WorkerState(settings=settings, pool=pool, writer=writer)
        session = aiohttp.ClientSession()
        ctx["http"] = session
        gateway = Gateway(
            session,
            settings.merchants,
            settings.operators,
            base_url=settings.gateway_base_url,
            timeout_s=settings.gateway_timeout_s,
        )
        # The lease outlives the slowest gateway call, so no other worker takes an order mid-call.
        lease_s = settings.gateway_timeout_s * 2 + 30
        submitter = Submitter(pool, gateway, settings.policy, callback_url=settings.callback_url, lease_s=lease_s)
        refunder = Refunder(pool, gateway, settings.policy, lease_s=lease_s)
        ctx["payments"] = PaymentState(submitter=submitter, refunder=refunder, batch=settings.sweep_batch)
        ctx["recon"] = ReconState(
            pool=pool,
            business_tz=settings.business_tz,
            http=session,
            alert_webhook_url=settings.alert_webhook_url,
            alert_storm_threshold=settings.alert_storm_threshold,
            merchants=settings.merchants,
            display_tz=settings.display_tz,
        )
        logger.info("worker started", extra={"merchants": len(settings.merchants), "max_tries": settings.max_tries})

    async def shutdown(ctx: dict[str, Any]) -> None:
        session: aiohttp.ClientSession | None = ctx.get("http")
        if session is not None:
            await session.close()
        state: WorkerState | None = ctx.get("state")
        if state is not None:
            await state.pool.close()

    every = set(range(0, 60, settings.cron_every_s))
    # arq's cron `unique` guard can misfire across workers; the jobs guard themselves in
    # Postgres (FOR UPDATE SKIP LOCKED leases), so every worker may run them.
    cron_jobs = [
        cron(timed(retry_failed_submissions), second=every, run_at_startup=True, timeout=240),
        cron(timed(sweep_unpaid_orders), second=every, run_at_startup=True, timeout=240),
        cron(timed(reconcile_ledger), second=every, run_at_startup=True, timeout=240),
        cron(timed(deliver_alerts), second=every, run_at_startup=True, timeout=120),
        cron(timed(report_merchants), second={0, 30}, run_at_startup=True, timeout=30),
    ]
    if settings.metrics_port:
        # Gauges are only worth their queries when something can scrape them.
        refresh_at = set(range(0, 60, REFRESH_EVERY_S))
        cron_jobs.append(cron(timed(refresh_metrics), second=refresh_at, run_at_startup=True, timeout=30))
    options: dict[str, Any] = {
        "functions": [
            func(timed(ingest_callbacks), name=INGEST_JOB, max_tries=settings.max_tries),
            func(timed(process_order), name=PROCESS_ORDER_JOB, max_tries=1),
            func(timed(process_refund), name=PROCESS_REFUND_JOB, max_tries=1),
            func(timed(replay_rejected_callback), name=REPLAY_REJECTED_JOB, max_tries=1),
        ],
        "cron_jobs": cron_jobs,
        "queue_name": QUEUE_NAME,
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": startup,
        "on_shutdown": shutdown,
        "max_jobs": settings.max_jobs,
        "poll_delay": settings.poll_delay_s,
        # Results are never read, and a kept result would make arq refuse a later
        # redelivery with the same job id: keep none.
        "keep_result": 0,
        "job_timeout": 120,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
    }
    options.update(overrides)
    return Worker(**options)


async def _check_schema_if_reachable(pool: Any) -> None:
    # A schema mismatch is fatal at start; an unreachable database is not: jobs retry until it is back.
    try:
        async with db.translate_errors(), pool.acquire() as conn:
            await check_schema(conn)
    except DatabaseUnavailable:
        logger.warning("postgres unreachable at start; callbacks will be retried until it answers")
