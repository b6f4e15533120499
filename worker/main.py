"""Builds the arq Worker for callback ingestion from WorkerSettings (the worker's composition)."""

from __future__ import annotations

import logging
from typing import Any

from arq import Worker, func
from arq.connections import RedisSettings

from worker import db
from worker.errors import DatabaseUnavailable
from worker.jobs import WorkerState, ingest_callbacks
from worker.migrations import check_schema
from worker.queue import INGEST_JOB, QUEUE_NAME, deserialize, serialize
from worker.settings import WorkerSettings
from worker.writer import BatchWriter

logger = logging.getLogger("ottrecon.worker")


def create_worker(settings: WorkerSettings, **overrides: Any) -> Worker:
    """An arq Worker for the callback queue; overrides (burst=True, poll_delay=0…) are for tests."""

    async def startup(ctx: dict[str, Any]) -> None:
        pool = await db.create_pool(settings.database_url, settings.db_pool_max)
        await _check_schema_if_reachable(pool)
        writer = BatchWriter(lambda v, r: db.record(pool, v, r), settings.write_batch_max)
        ctx["state"] = WorkerState(settings=settings, pool=pool, writer=writer)
        logger.info("worker started", extra={"merchants": len(settings.merchants), "max_tries": settings.max_tries})

    async def shutdown(ctx: dict[str, Any]) -> None:
        state: WorkerState | None = ctx.get("state")
        if state is not None:
            await state.pool.close()

    options: dict[str, Any] = {
        "functions": [func(ingest_callbacks, name=INGEST_JOB, max_tries=settings.max_tries)],
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
