"""A scheduled job that outlasts its interval is not joined by its next tick in the same worker.

arq enqueues a cron job at every scheduled second under a job id of its own, so a reconcile tick still
running when the next second comes used to be joined by another, and another: each ran
OTTRECON_RECONCILE_CONCURRENCY batches on pool connections of its own. Under a backlog, or with a batch
waiting on a lock, the ticks piled up until they held the whole pool, and callbacks waited for a
connection (found in a 200,000-callback drain: ingestion fell to 2,200/s with the worker's CPU idle).

The oracles are Postgres's: how many of this database's sessions wait on the books lock (each is one
reconcile batch in flight), and whether a callback queued meanwhile is recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import asyncpg

from ottpay.keys import MerchantKeys
from ottrecon.reconciliation.books_lock import BOOKS_LOCK, LOCK_BOOKS
from ottrecon.reconciliation.reconcile import BATCH
from tests.integration.stack import stop_worker, wait_until_started
from tests.integration.support import enqueue_callback, make_callback, worker_settings
from tests.integration.test_worker_heals import client
from worker.main import create_worker

CONCURRENCY = 2
# Enough changed keys for many more batches than one tick runs at once.
BACKLOG = BATCH * CONCURRENCY * 4
# Cron seconds the books lock is held: several ticks come due meanwhile.
HELD_S = 4.0

BATCHES_WAITING = """
SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.classid = $1 AND l.objid = $2 AND NOT l.granted
  AND a.datname = current_database()
"""


async def test_a_tick_waiting_on_a_lock_is_not_joined_by_the_next_and_callbacks_still_flow(
    database_url: str, redis_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO recon_dirty (merchant_id, order_id) SELECT 'M-BACKLOG', 'O' || g FROM generate_series(1, $1) g",
        BACKLOG,
    )
    settings = worker_settings(
        database_url, redis_url, merchants, cron_every_s=1, metrics_port=0, reconcile_concurrency=CONCURRENCY
    )
    # A month-end close holds the books lock: every reconcile batch waits for it (decision 0031).
    closer = await asyncpg.connect(database_url)
    closing = closer.transaction()
    await closing.start()
    await closer.execute(LOCK_BOOKS, *BOOKS_LOCK)
    worker = create_worker(dataclasses.replace(settings, poll_delay_s=0.02), handle_signals=False)
    task = asyncio.create_task(worker.main())
    try:
        await wait_until_started(worker, task)
        most_waiting = 0
        async with client(redis_url) as redis:
            assert await enqueue_callback(redis, make_callback("DURING-CLOSE", "100"))
            recorded_after_s = None
            started = time.monotonic()
            while time.monotonic() - started < HELD_S:
                most_waiting = max(most_waiting, await db.fetchval(BATCHES_WAITING, *BOOKS_LOCK))
                if recorded_after_s is None and await db.fetchval(
                    "SELECT count(*) FROM callbacks WHERE order_id = 'DURING-CLOSE'"
                ):
                    recorded_after_s = time.monotonic() - started
                await asyncio.sleep(0.05)
        assert most_waiting == CONCURRENCY, f"{most_waiting} reconcile batches waited at once"
        assert recorded_after_s is not None, "a callback waited for a reconcile tick to finish"
        await closer.close()  # the close ends: its lock goes with its session
        # The lock gone, the backlog is worked off by the ticks that follow: nothing was lost by skipping.
        deadline = time.monotonic() + 30
        while await db.fetchval("SELECT count(*) FROM recon_dirty WHERE merchant_id = 'M-BACKLOG'"):
            assert time.monotonic() < deadline, "the backlog was not reconciled after the lock was released"
            await asyncio.sleep(0.1)
    finally:
        await closer.close()
        await stop_worker(worker, task)
