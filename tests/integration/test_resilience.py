"""Postgres going away while callbacks wait: retried until it is back, dead-lettered past the window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from arq import ArqRedis

from ottpay.keys import MerchantKeys
from ottrecon.callbacks.deadletter import dead_letter_count, requeue_dead
from ottrecon.queue import QUEUE_NAME
from tests.integration.support import TcpProxy, drain, enqueue_callback, make_callback, worker_settings


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(database_url)
    tcp = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await tcp.start()
    yield tcp
    await tcp.cut()


def through(proxy: TcpProxy, database_url: str) -> str:
    parts = urlsplit(database_url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


async def test_callback_waits_out_a_postgres_outage_and_is_recorded(
    database_url: str,
    redis_url: str,
    redis: ArqRedis,
    merchants: MerchantKeys,
    db: asyncpg.Connection,
    proxy: TcpProxy,
) -> None:
    assert await enqueue_callback(redis, make_callback("DOWN1", "4200"))
    await proxy.cut()
    settings = worker_settings(through(proxy, database_url), redis_url, merchants, retry_window_s=60)
    worker_run = asyncio.create_task(drain(settings))
    await asyncio.sleep(1.0)
    # Still down: nothing recorded, nothing lost, the job is waiting to be retried.
    assert await db.fetchval("SELECT count(*) FROM callbacks") == 0
    assert not worker_run.done()
    # The callback's job is still queued (beside the worker's scheduled jobs, ids "cron:…").
    queued = [job for job in await redis.zrange(QUEUE_NAME, 0, -1) if not job.startswith(b"cron:")]
    assert len(queued) == 1

    await proxy.start()
    worker = await asyncio.wait_for(worker_run, timeout=30)

    assert worker.jobs_retried >= 1
    assert await db.fetchval("SELECT amount FROM payments WHERE order_id = 'DOWN1'") == 4200
    assert await dead_letter_count(redis) == 0


async def test_callback_outliving_the_retry_window_is_dead_lettered_then_requeued(
    database_url: str,
    redis_url: str,
    redis: ArqRedis,
    merchants: MerchantKeys,
    db: asyncpg.Connection,
    proxy: TcpProxy,
) -> None:
    assert await enqueue_callback(redis, make_callback("DOWN2", "777"))
    await proxy.cut()
    settings = worker_settings(through(proxy, database_url), redis_url, merchants, retry_window_s=0.3)
    await asyncio.wait_for(drain(settings), timeout=30)
    assert await dead_letter_count(redis) == 1
    assert await db.fetchval("SELECT count(*) FROM callbacks") == 0

    await proxy.start()
    assert await requeue_dead(redis_url) == 1
    await drain(settings)

    assert await dead_letter_count(redis) == 0
    assert await db.fetchval("SELECT amount FROM payments WHERE order_id = 'DOWN2'") == 777
