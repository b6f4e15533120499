"""Builds the arq Worker for callback ingestion from WorkerSettings (the worker's composition)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq import ArqRedis, cron, func
from arq.typing import WorkerCoroutine
from redis.asyncio import ConnectionPool

from ottrecon import db
from ottrecon.callbacks import store as callback_store
from ottrecon.errors import DatabaseUnavailable
from ottrecon.migrations import check_schema
from ottrecon.payments.gateway import Gateway
from ottrecon.payments.refunder import Refunder
from ottrecon.payments.submitter import Submitter
from ottrecon.queue import (
    INGEST_JOB,
    PROCESS_ORDER_JOB,
    PROCESS_REFUND_JOB,
    QUEUE_NAME,
    REPLAY_REJECTED_JOB,
    deserialize,
    serialize,
)
from ottrecon.redis_persistence import PersistenceWatch, stop_watch
from worker.context import PaymentState, ReconState, WorkerState, arq_job
from worker.http import LazySession
from worker.jobs import ARQ_TRIES_SLACK, ingest_callbacks
from worker.legacy_queue import adopt_legacy_queue, adopt_now
from worker.metrics import REFRESH_EVERY_S, count_submission, refresh_metrics, timed
from worker.payment_jobs import (
    process_order,
    process_refund,
    retry_failed_submissions,
    sweep_unpaid_orders,
)
from worker.recon_jobs import (
    deliver_alerts,
    reconcile_ledger,
    replay_rejected_callback,
    report_merchants,
)
from worker.resilient import ResilientWorker
from worker.retention_jobs import purge_rejected_callbacks
from worker.settings import WorkerSettings
from worker.ticks import one_tick_at_a_time
from worker.writer import BatchWriter

logger = logging.getLogger("ottrecon.worker")

# A Redis that does not answer a command within this long counts as down (arq sets no limit:
# a hung Redis would hang the worker). No command the worker sends blocks on the server side.
REDIS_SOCKET_TIMEOUT_S = 5.0


def create_worker(settings: WorkerSettings, *, burst: bool = False, handle_signals: bool = True) -> ResilientWorker:
    """The arq Worker for the job queue. burst: stop once the queue is empty (as arq's own tests drive a worker);
    handle_signals=False leaves SIGINT/SIGTERM to an embedding process (tests run several workers in one)."""

    async def startup(ctx: dict[str, Any]) -> None:
        pool = await db.create_pool(settings.database_url, settings.db_pool_max)
        await _check_schema_if_reachable(pool)
        writer = BatchWriter(
            lambda v, r: callback_store.record(pool, v, r), settings.write_batch_max, settings.writes_in_flight
        )
        ctx["state"] = WorkerState(settings=settings, pool=pool, writer=writer)
        session = LazySession()
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
        submitter = Submitter(
            pool,
            gateway,
            settings.policy,
            callback_url=settings.callback_url,
            lease_s=lease_s,
            on_reply=count_submission,
        )
        refunder = Refunder(pool, gateway, settings.policy, lease_s=lease_s, on_reply=count_submission)
        ctx["payments"] = PaymentState(submitter=submitter, refunder=refunder, batch=settings.sweep_batch)
        ctx["recon"] = ReconState(
            pool=pool,
            business_tz=settings.business_tz,
            http=session,
            alert_webhook_url=settings.alert_webhook_url,
            alert_storm_threshold=settings.alert_storm_threshold,
            merchants=settings.merchants,
            display_tz=settings.display_tz,
            currency=settings.currency,
            reconcile_concurrency=settings.reconcile_concurrency,
        )
        # Before the first poll: jobs an older receiver queued under the queue's old name (decision 0033).
        await adopt_now(ctx["redis"])
        watch = PersistenceWatch(ctx["redis"], settings.persistence_check_every_s, process="worker")
        ctx["persistence"] = (watch, asyncio.create_task(watch.run()))
        logger.info("worker started", extra={"merchants": len(settings.merchants), "max_tries": settings.max_tries})

    async def shutdown(ctx: dict[str, Any]) -> None:
        if "persistence" in ctx:
            await stop_watch(*ctx["persistence"])
        session: LazySession | None = ctx.get("http")
        if session is not None:
            await session.close()
        state: WorkerState | None = ctx.get("state")
        if state is not None:
            await state.pool.close()

    every = set(range(0, 60, settings.cron_every_s))

    def scheduled(job: Any) -> WorkerCoroutine:
        # One tick at a time in this worker (decision 0044); timed inside, so a skipped tick is not a run.
        return arq_job(one_tick_at_a_time(timed(job)))

    # arq's cron `unique` guard can misfire across workers; the jobs guard themselves in
    # Postgres (FOR UPDATE SKIP LOCKED leases), so every worker may run them.
    cron_jobs = [
        cron(scheduled(retry_failed_submissions), second=every, run_at_startup=True, timeout=240),
        cron(scheduled(sweep_unpaid_orders), second=every, run_at_startup=True, timeout=240),
        cron(scheduled(reconcile_ledger), second=every, run_at_startup=True, timeout=240),
        cron(scheduled(deliver_alerts), second=every, run_at_startup=True, timeout=120),
        cron(scheduled(report_merchants), second={0, 30}, run_at_startup=True, timeout=30),
        cron(scheduled(purge_rejected_callbacks), second={15}, run_at_startup=True, timeout=120),
        # Stragglers of an older version still running during an upgrade (decision 0033).
        cron(scheduled(adopt_legacy_queue), second={45}, timeout=60),
    ]
    if settings.metrics_port:
        # Gauges are only worth their queries when something can scrape them.
        refresh_at = set(range(0, 60, REFRESH_EVERY_S))
        cron_jobs.append(cron(scheduled(refresh_metrics), second=refresh_at, run_at_startup=True, timeout=30))
    options: dict[str, Any] = {
        "functions": [
            # The job bounds its own write below this (ingest_write_timeout_s) and retries: a timeout
            # here would make arq drop it.
            func(
                arq_job(timed(ingest_callbacks)),
                name=INGEST_JOB,
                max_tries=settings.max_tries + ARQ_TRIES_SLACK,
                timeout=settings.ingest_write_timeout_s + 30,
            ),
            func(arq_job(timed(process_order)), name=PROCESS_ORDER_JOB, max_tries=1),
            func(arq_job(timed(process_refund)), name=PROCESS_REFUND_JOB, max_tries=1),
            func(arq_job(timed(replay_rejected_callback)), name=REPLAY_REJECTED_JOB, max_tries=1),
        ],
        "cron_jobs": cron_jobs,
        "queue_name": QUEUE_NAME,
        "redis_pool": _redis_pool(settings.redis_url),
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
        # SIGTERM: take no new job, let the running ones finish (their batch is recorded and
        # acknowledged), then exit; what is still running after the grace is cancelled and requeued.
        "job_completion_wait": int(settings.shutdown_grace_s),
        "job_lease_s": settings.job_lease_s,
        "burst": burst,
        "handle_signals": handle_signals,
    }
    return ResilientWorker(**options)


def _redis_pool(redis_url: str) -> ArqRedis:
    """A lazily connecting client: the worker starts (and waits) while Redis is down."""
    pool = ConnectionPool.from_url(
        redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT_S, socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S
    )
    return ArqRedis(
        pool,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=QUEUE_NAME,
    )


async def _check_schema_if_reachable(pool: Any) -> None:
    # A schema mismatch is fatal at start; an unreachable database is not: jobs retry until it is back.
    try:
        async with db.translate_errors(), pool.acquire() as conn:
            await check_schema(conn)
    except DatabaseUnavailable:
        logger.warning("postgres unreachable at start; callbacks will be retried until it answers")
