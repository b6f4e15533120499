"""The worker heals by itself: it rides out Redis going away, recovers a killed worker's jobs within
a lease, and on SIGTERM finishes the batch it is writing before it exits."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from arq import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from ottpay.keys import MerchantKeys
from ottrecon.queue import QUEUE_NAME, QUEUED_KEY_PREFIX, deserialize, serialize
from tests.integration.processes import redis_server, worker_env, worker_process
from tests.integration.stack import stop_worker, wait_until_started
from tests.integration.support import enqueue_callback, make_callback, worker_settings
from worker.main import create_worker


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[ArqRedis]:
    redis = ArqRedis(ConnectionPool.from_url(url), job_serializer=serialize, job_deserializer=deserialize)
    try:
        yield redis
    finally:
        await redis.aclose(close_connection_pool=True)


async def wait_for(check: object, timeout_s: float) -> float:
    """Poll an async predicate until true; return the seconds it took (fails the test on timeout)."""
    started = time.monotonic()
    while not await check():  # type: ignore[operator]
        assert time.monotonic() - started < timeout_s, f"not true within {timeout_s} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def ingest_jobs(redis: ArqRedis) -> list[bytes]:
    return [job for job in await redis.zrange(QUEUE_NAME, 0, -1) if not job.startswith(b"cron:")]


async def test_worker_rides_out_a_redis_outage_and_resumes(
    tmp_path: Path, database_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    async with redis_server(tmp_path, "--appendonly", "yes", "--appendfsync", "always") as server:
        settings = worker_settings(database_url, server.url, merchants, cron_every_s=1, metrics_port=0)
        worker = create_worker(dataclasses.replace(settings, poll_delay_s=0.01), handle_signals=False)
        task = asyncio.create_task(worker.main())
        await wait_until_started(worker, task)
        async with client(server.url) as redis:
            assert await enqueue_callback(redis, make_callback("BEFORE", "100"))

            async def recorded(order_id: str) -> bool:
                return bool(await db.fetchval("SELECT count(*) FROM callbacks WHERE order_id = $1", order_id))

            await wait_for(lambda: recorded("BEFORE"), 10)
            server.kill()
            await asyncio.sleep(3)  # an outage of several polls and backoff steps
            assert not task.done(), task.exception() if task.done() else None
            await server.start()  # AOF: the queue comes back as it was
            assert await enqueue_callback(redis, make_callback("AFTER", "200"))
            await wait_for(lambda: recorded("AFTER"), 15)
        assert not task.done()
        assert worker.redis_outages == 1
        await stop_worker(worker, task)


async def test_a_killed_workers_job_is_taken_over_within_its_lease(
    tmp_path: Path, database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    lease_s = 3.0
    env = worker_env(database_url, redis_url, OTTRECON_JOB_LEASE_SECONDS=str(lease_s))
    blocker = await asyncpg.connect(database_url)
    try:
        # Hold the table so the first worker is caught mid-job, its batch in flight.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE callbacks IN SHARE ROW EXCLUSIVE MODE")
        assert await enqueue_callback(redis, make_callback("ORPHAN", "300"))
        with worker_process(env, tmp_path / "worker-a.log") as first:

            async def in_flight() -> bool:
                return bool(await redis.keys("arq:in-progress:*")) and bool(await ingest_jobs(redis))

            await wait_for(in_flight, 20)
            await asyncio.sleep(0.5)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        killed_at = time.monotonic()
        # Its server-side session must not finish the write for it: only a takeover may record it.
        await blocker.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND pid <> $1",
            db.get_server_pid(),
        )
        await transaction.rollback()
    finally:
        await blocker.close()

    settings = worker_settings(database_url, redis_url, merchants, metrics_port=0)
    worker = create_worker(dataclasses.replace(settings, poll_delay_s=0.05), handle_signals=False)
    task = asyncio.create_task(worker.main())
    try:

        async def recorded() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM callbacks WHERE order_id = 'ORPHAN'"))

        await wait_for(recorded, 30)
        recovered_after = time.monotonic() - killed_at
    finally:
        await stop_worker(worker, task)
    # Within one lease (plus polling), not arq's 250 s in-progress timeout.
    assert recovered_after < lease_s + 5, recovered_after


async def test_sigterm_lets_the_in_flight_batch_finish_before_the_worker_exits(
    tmp_path: Path, database_url: str, redis_url: str, redis: ArqRedis, db: asyncpg.Connection
) -> None:
    blocker = await asyncpg.connect(database_url)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE callbacks IN SHARE ROW EXCLUSIVE MODE")
        assert await enqueue_callback(redis, make_callback("INFLIGHT", "400"))
        with worker_process(worker_env(database_url, redis_url), tmp_path / "worker.log") as process:

            async def in_flight() -> bool:
                return bool(await redis.keys("arq:in-progress:*")) and bool(await ingest_jobs(redis))

            await wait_for(in_flight, 20)
            await asyncio.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            assert process.poll() is None  # still finishing its batch
            await transaction.rollback()  # the batch can be written now
            returncode = await asyncio.to_thread(process.wait, 20)
    finally:
        await blocker.close()

    assert returncode == 0, (tmp_path / "worker.log").read_text()[-2000:]
    assert await db.fetchval("SELECT amount FROM payments WHERE order_id = 'INFLIGHT'") == 400
    # Finished and acknowledged, not cancelled and put back for another worker to redo.
    assert await ingest_jobs(redis) == []
    assert await redis.keys(QUEUED_KEY_PREFIX + "*") == []


async def test_a_job_whose_finish_met_a_redis_outage_does_not_crash_the_worker_when_it_stops(
    tmp_path: Path, database_url: str, merchants: MerchantKeys
) -> None:
    # A job's last step (arq's finish_job) writes to Redis; when Redis went away at that moment the
    # job's task ends with a Redis error. The job is not lost (its lease lapses and it runs again,
    # idempotently); collecting that task when the worker stops must not raise.
    async with redis_server(tmp_path, "--appendonly", "yes", "--appendfsync", "always") as server:
        settings = worker_settings(database_url, server.url, merchants, metrics_port=0)
        worker = create_worker(settings, burst=True, handle_signals=False)

        async def finish_met_an_outage() -> None:
            raise RedisConnectionError("Connection reset by peer")

        failed = asyncio.create_task(finish_met_an_outage())
        await asyncio.gather(failed, return_exceptions=True)
        worker.tasks["finished-during-an-outage"] = failed
        try:
            assert await worker._burst_finished()
        finally:
            await worker.close()
