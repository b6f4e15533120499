"""A statement import and the reconciler, or two imports, at once: no key left stale with nothing queued.

An import's trigger queues the keys whose ledger rows (and earlier lines) it sees in its period. Two races
left a key stale (found by the independent change-queue stress test, older than sql/0015):
- the reconciler moved a key's ledger row into the import's period while the import was open: the import did
  not queue it (its row was elsewhere when the trigger ran), and the reconciler did not see the import;
- a second import could not see the first one's uncommitted lines, which it supersedes.
An import now holds the books lock exclusively from its start to its commit (decision 0047): batches in flight
finish first, later batches wait for it, and so does another import.

Each test pauses the real import_statement inside its transaction (a trigger of the test database waits on
an advisory lock the test holds) at the moment that makes the race certain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from ottrecon.payments import store as payments_store
from ottrecon.reconciliation.books_lock import BOOKS_LOCK
from ottrecon.reconciliation.layouts import StatementLayout
from ottrecon.reconciliation.reconcile import reconcile_pending
from ottrecon.reconciliation.statements import import_statement

TZ = "America/Toronto"
MERCHANT = "QC1"
# Order A as the payments API stores it (pending; its insert queues the key).
ORDER_A = (MERCHANT, "A", "ACTIVEPAY", "ALIPAY", 1250, 0, None, None, "A", "sha")
HEADER = "merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n"
# Lines of the order named here wait on lock 4242, of any other order on 4243 (the test holds both).
PAUSE_LINES = """
CREATE FUNCTION race_test_pause() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.order_id = 'A' THEN PERFORM pg_advisory_xact_lock_shared(4242);
    ELSE PERFORM pg_advisory_xact_lock_shared(4243);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER race_test_pause BEFORE INSERT ON statement_lines FOR EACH ROW EXECUTE FUNCTION race_test_pause();
"""
WAITING_ON = """
SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()
  AND l.classid = $1 AND l.objid = $2
"""
LEDGER_OF_A = "SELECT statement_status, statement_line_ids FROM ledger WHERE merchant_id = $1 AND order_id = 'A'"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    # A statement that waits for ever fails the test instead of hanging it.
    async with asyncpg.create_pool(
        database_url, min_size=1, max_size=6, server_settings={"statement_timeout": "20000"}
    ) as created:
        yield created


@pytest.fixture
async def holder(database_url: str, db: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A session holding the pause locks; the test releases them one by one."""
    await db.execute(PAUSE_LINES)
    conn = await asyncpg.connect(database_url)
    await conn.execute("SELECT pg_advisory_lock(4242), pg_advisory_lock(4243)")
    yield conn
    await conn.close()


def statement(tmp_path: Path, name: str, order_id: str, day: date) -> Path:
    path = tmp_path / name
    path.write_text(HEADER + f"{MERCHANT},{order_id},AL{name},500,0,1,0,{day} 12:00:00\n", encoding="utf-8")
    return path


def start_import(pool: asyncpg.Pool, path: Path) -> asyncio.Task[object]:
    """The real import_statement of path, running (the tests pause it on its lines' locks)."""
    return asyncio.create_task(import_statement(pool, path, StatementLayout(), business_tz=TZ))


async def until(db: asyncpg.Connection, locks: list[tuple[int, int]], *also: asyncio.Task[object]) -> None:
    """Until a session waits on one of the locks, or one of the tasks is done: the step the test waits for
    ended one way or the other (on the code before decision 0047 the other way is the race)."""
    for _ in range(400):
        for lock in locks:
            if await db.fetchval(WAITING_ON, *lock):
                return
        if any(task.done() for task in also):
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"nobody waited on {locks} and nothing ended")


async def drained_row_of_a(pool: asyncpg.Pool, db: asyncpg.Connection) -> dict[str, object]:
    """A's ledger row once everything queued is reconciled (the queue must then be empty)."""
    await reconcile_pending(pool, business_tz=TZ)
    assert await db.fetchval("SELECT count(*) FROM recon_dirty") == 0
    row = await db.fetchrow(LEDGER_OF_A, MERCHANT)
    assert row is not None, "A has no ledger row"
    return dict(row)


async def test_an_import_and_the_reconciliation_of_a_late_payment_leave_nothing_stale(
    pool: asyncpg.Pool, db: asyncpg.Connection, holder: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(payments_store.INSERT_ORDER, *ORDER_A)
    await reconcile_pending(pool, business_tz=TZ)  # A's row is dated on its creation, today
    # Paid 30 hours ago (a status query found it): reconciled, A's row moves to that date.
    paid_at = datetime.now(ZoneInfo(TZ)) - timedelta(hours=30)
    await db.execute(
        "UPDATE orders SET status = 'paid', paid_amount = amount, paid_source = 'query', paid_at = $2"
        " WHERE order_id = $1",
        "A",
        paid_at,
    )
    # A statement of that date which does not list A: A is paid and missing from it.
    path = statement(tmp_path, "late.csv", "OTHER", paid_at.date())
    importing = start_import(pool, path)
    await until(db, [(0, 4243)], importing)  # the import is open, its first line paused
    reconciling = asyncio.create_task(reconcile_pending(pool, business_tz=TZ))
    # Before: the reconciler runs A to its payment date without the import. Now: it waits for the import.
    await until(db, [BOOKS_LOCK], reconciling)
    await holder.execute("SELECT pg_advisory_unlock(4243)")
    await importing
    await reconciling
    row = await drained_row_of_a(pool, db)
    assert row["statement_status"] == "not_in_statement", row


async def test_two_imports_at_once_leave_no_superseded_line_current(
    pool: asyncpg.Pool, db: asyncpg.Connection, holder: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(payments_store.INSERT_ORDER, *ORDER_A)
    day = date.today() - timedelta(days=3)
    first = start_import(pool, statement(tmp_path, "one.csv", "A", day))
    await until(db, [(0, 4242)], first)  # import 1 is open, paused on its line for A
    # Import 2, same merchant and date, does not list A: once committed it supersedes import 1's line.
    second = start_import(pool, statement(tmp_path, "two.csv", "OTHER", day))
    # Before: import 2 runs its trigger now, blind to import 1's line (and pauses on its own line). Now: it
    # waits for import 1.
    await until(db, [BOOKS_LOCK, (0, 4243)], second)
    await holder.execute("SELECT pg_advisory_unlock(4242)")
    await first
    reconciling = asyncio.create_task(reconcile_pending(pool, business_tz=TZ))
    # Before: the reconciler runs with import 1 alone. Now: import 2 holds the books, the reconciler waits.
    await until(db, [BOOKS_LOCK], reconciling)
    await holder.execute("SELECT pg_advisory_unlock(4243)")
    await second
    await reconciling
    row = await drained_row_of_a(pool, db)
    assert (row["statement_status"], row["statement_line_ids"]) == (None, []), row


async def test_an_import_that_waited_for_the_books_shows_as_imported_when_it_got_its_turn(
    pool: asyncpg.Pool, db: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    # Precedence goes by id, taken once the import holds the books; imported_at must tell the same order.
    other = await asyncpg.connect(database_url)
    try:
        await other.execute("SELECT pg_advisory_lock($1, $2)", *BOOKS_LOCK)  # another import or a close, say
        importing = start_import(pool, statement(tmp_path, "waited.csv", "A", date.today() - timedelta(days=1)))
        await until(db, [BOOKS_LOCK], importing)
        await asyncio.sleep(0.2)
        released_at = await other.fetchval("SELECT clock_timestamp()")
        await other.execute("SELECT pg_advisory_unlock($1, $2)", *BOOKS_LOCK)
        await importing
    finally:
        await other.close()
    imported_at = await db.fetchval("SELECT imported_at FROM statement_imports")
    # Before: the transaction's start, taken before the wait (0.2 s and more earlier).
    assert imported_at >= released_at, (imported_at, released_at)
