"""Several workers, duplicated jobs and shuffled order: still one callback per md5, one payment per order."""

from __future__ import annotations

import asyncio
import random

import asyncpg
from arq import ArqRedis

from ottpay.keys import MerchantKeys
from ottrecon.queue import INGEST_JOB, QUEUE_NAME
from tests.integration.support import drain, make_callback, worker_settings

TIME_FORMATS = ("20200416050429", "2020-04-16 05:04:29", "2020-04-16 05:04:29 CST")


async def test_two_workers_with_duplicate_jobs_record_each_payment_once(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    orders = [f"CONC{n}" for n in range(60)]
    callbacks = [
        make_callback(order, str(100 + n), finish_time=fmt) for n, order in enumerate(orders) for fmt in TIME_FORMATS
    ]
    # Every callback is queued three times as separate jobs (redeliveries after processing), shuffled.
    jobs = [c for c in callbacks for _ in range(3)]
    random.Random(7).shuffle(jobs)
    for body in jobs:
        item = {"envelope": body, "received_at": "2026-11-26T12:00:00+00:00"}
        await redis.enqueue_job(INGEST_JOB, [item], _queue_name=QUEUE_NAME)

    settings = worker_settings(database_url, redis_url, merchants, max_jobs=50)
    first, second = await asyncio.gather(drain(settings), drain(settings))

    # (each worker also ran its two scheduled jobs once at start)
    assert first.jobs_complete + second.jobs_complete >= len(jobs)
    assert first.jobs_failed + second.jobs_failed == 0
    assert await db.fetchval("SELECT count(*) FROM callbacks") == len(callbacks)
    rows = await db.fetch("SELECT order_id, amount FROM payments ORDER BY amount")
    assert [(r["order_id"], r["amount"]) for r in rows] == [(o, 100 + n) for n, o in enumerate(orders)]
    assert await db.fetchval("SELECT count(*) FROM rejected_callbacks") == 0
