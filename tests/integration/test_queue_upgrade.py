"""Upgrading past the queue's hash tag (decision 0033): a new worker drains what an older receiver queued."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
from arq import ArqRedis

from ottpay.keys import MerchantKeys
from ottrecon.queue import INGEST_JOB, LEGACY_QUEUE_NAME, QUEUE_NAME, adopt_legacy_jobs, deserialize
from tests.integration.support import drain, make_callback, worker_settings
from webhook.queue import prepare

# The older receiver's key for a queued body (the prefix had no hash tag then).
LEGACY_QUEUED_PREFIX = "ottrecon:queued:"


async def queue_as_old_receiver(redis: ArqRedis, order_ids: list[str]) -> None:
    """One job per call, as the older receiver wrote it: arq's format (pinned equal by
    test_queue_contract), an untagged uuid job id, the legacy queue and queued-keys."""
    items = [deserialize(prepare(make_callback(o), datetime.now(UTC)).item) for o in order_ids]
    job_id = uuid.uuid4().hex
    assert await redis.enqueue_job(INGEST_JOB, items, _queue_name=LEGACY_QUEUE_NAME, _job_id=job_id) is not None
    for item in items:
        await redis.set(LEGACY_QUEUED_PREFIX + item["fingerprint"], job_id, px=604_800_000)


async def test_new_worker_records_callbacks_an_older_receiver_queued_under_the_old_name(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    await queue_as_old_receiver(redis, ["UP-1", "UP-2"])
    await queue_as_old_receiver(redis, ["UP-3"])

    worker = await drain(worker_settings(database_url, redis_url, merchants))

    assert worker.jobs_failed == 0
    assert await db.fetchval("SELECT array_agg(order_id ORDER BY order_id) FROM callbacks") == ["UP-1", "UP-2", "UP-3"]
    assert not await redis.exists(LEGACY_QUEUE_NAME)
    assert [job for job in await redis.zrange(QUEUE_NAME, 0, -1) if not job.startswith(b"cron:")] == []


async def test_adopting_keeps_due_times_and_is_idempotent_across_concurrent_workers(redis: ArqRedis) -> None:
    for n in range(2500):  # more than one adoption batch
        await redis.zadd(LEGACY_QUEUE_NAME, {f"old-{n}": 1_000 + n})
    await redis.zadd(QUEUE_NAME, {"old-7": 5})  # already adopted once: keeps its own due time

    moved = await asyncio.gather(*(adopt_legacy_jobs(redis, batch=1000) for _ in range(4)))

    assert sum(moved) == 2500
    assert not await redis.exists(LEGACY_QUEUE_NAME)
    adopted = dict(await redis.zrange(QUEUE_NAME, 0, -1, withscores=True))
    assert len(adopted) == 2500
    assert adopted[b"old-7"] == 5
    assert all(adopted[f"old-{n}".encode()] == 1_000 + n for n in range(2500) if n != 7)
    assert await adopt_legacy_jobs(redis) == 0
