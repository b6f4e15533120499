"""The change queue holds a waiting key once, and never at the cost of a change (sql/0015, decision 0045).

A key changed again while it waits adds nothing to the queue, but only when the waiting entry is sure to be
claimed after the change commits. Each case below holds the transactions open at the moment that matters,
on connections of their own, and ends with the reference model's ledger (the change was not lost).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ottrecon.payments import store as payments_store
from ottrecon.reconciliation.reconcile import CLAIM_CHANGES, reconcile_pending
from tests.integration.model_world import BUSINESS_TZ, assert_matches_model, evidence_from_db

MERCHANT = "M-QUEUE"
FLAG_UNPAID = "UPDATE orders SET status = 'unpaid', unpaid_flagged_at = now() WHERE merchant_id = $1 AND order_id = $2"
EXPIRE = "UPDATE orders SET status = 'expired' WHERE merchant_id = $1 AND order_id = $2"
QUEUED = "SELECT count(*) FROM recon_dirty WHERE merchant_id = $1 AND order_id = $2"


async def create_order(conn: asyncpg.Connection, order_id: str) -> int:
    """An ACTIVEPAY order as the payments API stores it (its insert queues the key); returns its id."""
    args = (MERCHANT, order_id, "ACTIVEPAY", "ALIPAY", 1250, 0, None, None, order_id, "sha")
    order_ref: int = await conn.fetchval(payments_store.INSERT_ORDER, *args)
    return order_ref


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as created:
        yield created


async def test_a_key_changed_again_while_it_waits_is_queued_once(db: asyncpg.Connection) -> None:
    await create_order(db, "O-1")
    await db.execute(FLAG_UNPAID, MERCHANT, "O-1")
    await db.execute(EXPIRE, MERCHANT, "O-1")
    assert await db.fetchval(QUEUED, MERCHANT, "O-1") == 1


async def test_one_statement_that_changes_a_key_in_several_tables_queues_it_once(db: asyncpg.Connection) -> None:
    # Order, then its payment attempt and its new state in one transaction: one queued row.
    async with db.transaction():
        order_ref = await create_order(db, "O-2")
        await db.execute(
            "INSERT INTO submission_attempts (order_ref, action, outcome, sent, started_at, latency_ms)"
            " VALUES ($1, 'ACTIVEPAY', 'success', true, now(), 5)",
            order_ref,
        )
        await db.execute(FLAG_UNPAID, MERCHANT, "O-2")
    assert await db.fetchval(QUEUED, MERCHANT, "O-2") == 1


async def test_a_change_while_a_reconciler_holds_the_waiting_entry_is_queued_anew(
    pool: asyncpg.Pool, db: asyncpg.Connection, database_url: str
) -> None:
    """The reconciler has claimed the key (uncommitted, its statements may already have read the old state):
    the change must queue the key again, without waiting for the reconciler."""
    await create_order(db, "O-3")
    reconciler = await asyncpg.connect(database_url)
    try:
        claim = reconciler.transaction()
        await claim.start()
        assert len(await reconciler.fetch(CLAIM_CHANGES, 10)) == 1
        # The change commits while the claim is open; a wait here would time out.
        await asyncio.wait_for(db.execute(FLAG_UNPAID, MERCHANT, "O-3"), timeout=5)
        await claim.commit()
    finally:
        await reconciler.close()
    assert await db.fetchval(QUEUED, MERCHANT, "O-3") == 1
    await reconcile_pending(pool, business_tz=BUSINESS_TZ)
    await assert_matches_model(pool, await evidence_from_db(db), ["order", "claimed", "flagged while claimed"])


async def test_a_reconciler_passes_by_an_entry_an_open_change_relies_on(
    pool: asyncpg.Pool, db: asyncpg.Connection, database_url: str
) -> None:
    """An open transaction changed a waiting key and queued nothing: a reconciler running meanwhile must leave
    the entry queued, so that it is claimed after the change commits."""
    await create_order(db, "O-4")
    writer = await asyncpg.connect(database_url)
    try:
        change = writer.transaction()
        await change.start()
        await writer.execute(FLAG_UNPAID, MERCHANT, "O-4")
        assert await writer.fetchval(QUEUED, MERCHANT, "O-4") == 1, "the change queued the key again"
        report = await reconcile_pending(pool, business_tz=BUSINESS_TZ)
        assert report.keys == 0, "the reconciler took the entry the open change relies on"
        await change.commit()
    finally:
        await writer.close()
    await reconcile_pending(pool, business_tz=BUSINESS_TZ)
    assert await db.fetchval(QUEUED, MERCHANT, "O-4") == 0
    await assert_matches_model(pool, await evidence_from_db(db), ["order", "flagged, open", "reconciled", "commit"])
