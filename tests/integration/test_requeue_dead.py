"""`ottrecon requeue-dead` run by several operators at once, or killed midway, loses no dead-lettered callback."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from arq import ArqRedis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from ottpay.fingerprint import envelope_fingerprint
from ottpay.keys import MerchantKeys
from ottrecon.callbacks.deadletter import RUNS_KEY, dead_letter_count, park, requeue_dead
from ottrecon.queue import DEAD_LETTER_KEY, INGEST_JOB, JOB_EXPIRES, QUEUE_NAME, deserialize, serialize
from tests.conftest import LOCK_KEY
from tests.integration.support import drain, make_callback, worker_settings


async def _park_entries(redis: ArqRedis, count: int, *, per_entry: int = 1) -> list[str]:
    """Dead-letter `count` entries of `per_entry` distinct callbacks each; return every order id parked."""
    order_ids: list[str] = []
    for n in range(count):
        ids = [f"DEAD{n}x{i}" for i in range(per_entry)]
        order_ids += ids
        await park(redis, [_queue_item(make_callback(order_id)) for order_id in ids], reason="test")
    return order_ids


async def _queued_order_ids(redis: ArqRedis) -> Counter[str]:
    """How many times each order id sits in an ingest job on the queue (read back from arq's own job records)."""
    queued: Counter[str] = Counter()
    for job in await redis.queued_jobs(queue_name=QUEUE_NAME):
        assert job.function == INGEST_JOB
        for item in job.args[0]:
            queued[_order_id(item)] += 1
    return queued


def _queue_item(envelope: dict[str, str]) -> dict[str, Any]:
    # An ingest job's item as the receiver queues it (tests/integration/test_queue_contract.py pins the shape).
    return {
        "envelope": envelope,
        "received_at": datetime.now(UTC).isoformat(),
        "fingerprint": envelope_fingerprint(envelope),
    }


def _order_id(item: dict[str, Any]) -> str:
    # The order id travels inside the encrypted data; the tests give every callback a distinct md5, so map it back.
    return str(_ORDER_BY_MD5[item["envelope"]["md5"]])


_ORDER_BY_MD5: dict[str, str] = {}


def _remember(order_ids: list[str]) -> None:
    for order_id in order_ids:
        _ORDER_BY_MD5[make_callback(order_id)["md5"]] = order_id


async def test_concurrent_requeue_runs_queue_every_entry_exactly_once_and_the_worker_records_them_all(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    order_ids = await _park_entries(redis, 80)
    _remember(order_ids)

    moved = await asyncio.gather(*(requeue_dead(redis_url) for _ in range(5)))

    assert sum(moved) == 80
    assert await dead_letter_count(redis) == 0
    # Without a crash nothing is queued twice, and nothing is missing.
    assert await _queued_order_ids(redis) == Counter(order_ids)
    await drain(worker_settings(database_url, redis_url, merchants))
    recorded = await db.fetch("SELECT order_id, count(*) AS n FROM callbacks GROUP BY order_id")
    assert {row["order_id"]: row["n"] for row in recorded} == dict.fromkeys(order_ids, 1)
    assert await db.fetchval("SELECT count(*) FROM payments") == 80


async def test_the_entry_a_killed_run_held_is_requeued_once_its_lease_lapses_and_not_before(
    redis_url: str, redis: ArqRedis
) -> None:
    order_ids = await _park_entries(redis, 2)
    _remember(order_ids)
    # What a run killed between claiming an entry and queueing it leaves behind: registered, its entry claimed.
    await redis.sadd(RUNS_KEY, "killed")  # type: ignore[misc]
    await redis.lmove(DEAD_LETTER_KEY, f"{DEAD_LETTER_KEY}:requeuing:killed", "LEFT", "RIGHT")
    await redis.set(f"{DEAD_LETTER_KEY}:requeuing:killed:lease", b"1", px=300)
    assert await dead_letter_count(redis) == 2

    assert await requeue_dead(redis_url) == 1  # the lease still runs: maybe it is alive, leave its entry alone
    assert await _queued_order_ids(redis) == Counter(order_ids[1:])
    await asyncio.sleep(0.35)
    assert await requeue_dead(redis_url) == 1

    assert await _queued_order_ids(redis) == Counter(order_ids)
    assert await dead_letter_count(redis) == 0
    assert await redis.smembers(RUNS_KEY) == set()  # type: ignore[misc]


async def test_a_killed_run_leaves_its_entry_to_the_next_run(redis_url: str, redis: ArqRedis) -> None:
    order_ids = await _park_entries(redis, 30)
    _remember(order_ids)
    # A run killed at some point after claiming work (asyncio cancellation runs no cleanup of ours, like a kill).
    killed = asyncio.create_task(requeue_dead(redis_url, lease_s=0.3))
    for _ in range(100_000):  # until it has requeued about a third
        if await redis.llen(DEAD_LETTER_KEY) <= 20:  # type: ignore[misc]
            break
        await asyncio.sleep(0)
    killed.cancel()
    await asyncio.gather(killed, return_exceptions=True)
    # Its claimed entry is still counted as dead-lettered, not silently gone.
    queued = await _queued_order_ids(redis)
    assert await dead_letter_count(redis) + sum(queued.values()) >= 30
    # Nobody else takes it while its lease runs; once it lapses the next run recovers it.
    await asyncio.sleep(0.4)
    await requeue_dead(redis_url)

    assert await dead_letter_count(redis) == 0
    queued = await _queued_order_ids(redis)
    assert set(queued) == set(order_ids)
    assert max(queued.values()) <= 2  # at worst the one claimed entry twice; ingest is idempotent


async def test_a_run_cancelled_while_it_closes_still_closes_its_connections(
    redis_url: str, redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kill lands at the worst moment: the run has started closing its pool, and the pool's per-connection
    # closes are scheduled but not yet started. Only the moment is arranged here; Redis and the pool are real.
    await _park_entries(redis, 1)
    closing = asyncio.Event()
    disconnect = ConnectionPool.disconnect

    async def disconnect_and_tell(pool: ConnectionPool, inuse_connections: bool = True) -> None:
        closing.set()  # the test wakes up before the per-connection closes get their first turn
        await disconnect(pool, inuse_connections)

    monkeypatch.setattr(ConnectionPool, "disconnect", disconnect_and_tell)
    run = asyncio.create_task(requeue_dead(redis_url))
    await closing.wait()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await asyncio.sleep(0.05)  # whatever closing goes on in the background has had its turn
        del run  # its traceback holds the run's pool: let it go, so an unclosed connection is found now
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.integers(1, 25),
    runs=st.lists(st.one_of(st.none(), st.integers(0, 60)), min_size=1, max_size=4),
)
def test_any_mix_of_concurrent_and_killed_runs_never_loses_an_entry(
    redis_url: str, entries: int, runs: list[int | None]
) -> None:
    """Oracle: the multiset of parked callbacks. Each run is either left to finish (None) or killed
    after that many of its own Redis round trips; a last run after the leases lapse must leave the
    dead-letter list empty with every parked callback queued at least once, and without kills, exactly once."""
    asyncio.run(_mix_of_runs(redis_url, entries, runs))


async def _mix_of_runs(redis_url: str, entries: int, runs: list[int | None]) -> None:
    redis = ArqRedis(ConnectionPool.from_url(redis_url), job_serializer=serialize, job_deserializer=deserialize)
    try:
        lock = await redis.get(LOCK_KEY)
        await redis.flushdb()
        await redis.set(LOCK_KEY, lock or b"held", ex=3600)
        order_ids = await _park_entries(redis, entries)
        _remember(order_ids)

        async def run(kill_after: int | None) -> None:
            if kill_after is None:
                # A run left to finish keeps the default lease: no slow moment of a loaded machine can make it
                # look killed, so without kills the exact count holds.
                await requeue_dead(redis_url)
                return
            task = asyncio.create_task(requeue_dead(redis_url, lease_s=0.2))
            for _ in range(kill_after):
                if task.done():
                    break
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        await asyncio.gather(*(run(kill_after) for kill_after in runs))
        await asyncio.sleep(0.25)
        await requeue_dead(redis_url)

        assert await dead_letter_count(redis) == 0
        assert await redis.llen(DEAD_LETTER_KEY) == 0  # type: ignore[misc]
        queued = await _queued_order_ids(redis)
        assert set(queued) == set(order_ids)
        if all(kill_after is None for kill_after in runs):
            assert queued == Counter(order_ids)
        # Whatever a requeue left behind in Redis is its own bookkeeping only: no list still holds an entry.
        leftovers = [key for key in await redis.keys(f"{DEAD_LETTER_KEY}*") if await redis.type(key) == b"list"]
        assert leftovers == []
    finally:
        await redis.aclose(close_connection_pool=True)


async def test_a_requeued_entry_outlives_a_worker_outage_as_long_as_a_received_callback(
    redis_url: str, redis: ArqRedis
) -> None:
    # arq's default job lifetime is one day: a requeued entry waiting out a longer worker outage would vanish
    # from Redis unrecorded. It gets the receiver's lifetime instead.
    await _park_entries(redis, 1)
    assert await requeue_dead(redis_url) == 1
    (job_id,) = [job.job_id for job in await redis.queued_jobs(queue_name=QUEUE_NAME)]
    lifetime_ms = await redis.pttl(f"arq:job:{job_id}")
    assert lifetime_ms > JOB_EXPIRES.total_seconds() * 1000 - 60_000, lifetime_ms


async def test_a_redis_that_stops_answering_fails_the_run_instead_of_hanging_it() -> None:
    """A server that accepts the connection and then says nothing (a stalled Redis, a half-open network path):
    the run fails within its timeout, as a RedisError the command reports (exit code 1). It used to wait for ever."""
    received: list[bytes] = []

    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(1024))
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(10):  # this test's own guard: the run must give up well before
            with pytest.raises(RedisError):
                await requeue_dead(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    finally:
        server.close()
        await server.wait_closed()
    assert received and received[0], "the run never sent its first command"
