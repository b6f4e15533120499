"""The reconciler: recompute ledger rows and alerts for every key whose evidence changed."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from importlib.resources import files

import asyncpg

from ottrecon import db
from ottrecon.progress import Progress
from ottrecon.reconciliation.books_lock import hold_books_shared
from ottrecon.reconciliation.closing import CONTRIBUTIONS

logger = logging.getLogger("ottrecon.reconcile")

# Read as package data (importlib.resources), the same way in a checkout, a wheel or a zip.
_QUERIES = files("ottrecon.reconciliation") / "queries"
RECONCILE_LEDGER = (_QUERIES / "reconcile_ledger.sql").read_text(encoding="utf-8")
BOOK_REFUNDS = (_QUERIES / "book_refunds.sql").read_text(encoding="utf-8")
SYNC_ALERTS = (_QUERIES / "sync_alerts.sql").read_text(encoding="utf-8")
# The contributions of the batch's keys, in the one formula closing.py books closes with.
BOOK_ADJUSTMENTS = (
    (_QUERIES / "book_adjustments.sql")
    .read_text(encoding="utf-8")
    .replace("{contributions}", CONTRIBUTIONS.format(where="(l.merchant_id, l.order_id) IN (SELECT * FROM keys)"))
)
# Take the oldest changes (rows of the change log, decision 0012) and every other visible change of the same
# keys, so that a key changed by several statements is recomputed once. Only committed rows are visible and
# SKIP LOCKED leaves rows another reconciler holds: each change is consumed exactly once, and a change
# committed after this claim's snapshot stays queued for the next one, whatever its key.
CLAIM_CHANGES = """
WITH picked AS (
    SELECT id, merchant_id, order_id FROM recon_dirty ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
), same_keys AS (
    SELECT d.id FROM recon_dirty d
    JOIN (SELECT DISTINCT merchant_id, order_id FROM picked) k USING (merchant_id, order_id)
    FOR UPDATE OF d SKIP LOCKED
)
-- An array, so the delete walks the primary key (a set here is planned as a scan of the whole queue).
DELETE FROM recon_dirty WHERE id = ANY (ARRAY(SELECT id FROM picked UNION SELECT id FROM same_keys))
RETURNING merchant_id, order_id
"""
# Serialise reconcilers per key (transaction-scoped advisory locks, always taken in the same order so two
# batches cannot deadlock): a reconciler that claimed a newer change of a key recomputes it only after
# any other reconciler of that key committed, so an older snapshot can never overwrite a newer one.
LOCK_KEYS = """
SELECT count(pg_advisory_xact_lock($3, h)) FROM (
    SELECT DISTINCT hashtext(merchant_id || chr(31) || order_id) AS h
    FROM unnest($1::text[], $2::text[]) AS k(merchant_id, order_id)
    ORDER BY h
) ordered
"""
# The advisory lock space of reconciler key locks (two-int form: apart from the migration lock's bigint).
KEY_LOCK_SPACE = 7413
# Everything known from any source, to rebuild the whole ledger (after a rules change, say). In key order, as
# the triggers queue (sql/0009): a batch is then a run of neighbouring keys (decision 0038).
MARK_ALL_DIRTY = """
INSERT INTO recon_dirty (merchant_id, order_id)
SELECT merchant_id, order_id FROM orders
UNION SELECT merchant_id, order_id FROM payments
UNION SELECT merchant_id, order_id FROM callbacks
UNION SELECT merchant_id, order_id FROM statement_lines
UNION SELECT merchant_id, order_id FROM ledger
ORDER BY 1, 2
"""
# Keys waiting for the reconciler: the total a progress display counts down (a scan of the change log, once).
PENDING_KEYS = "SELECT count(*) FROM (SELECT DISTINCT merchant_id, order_id FROM recon_dirty) keys"
# How a batch's transaction runs (see _reconcile_batch): its commit does not wait for the disk (derived data,
# decision 0040), and its statements are never JIT-compiled (decision 0048).
BATCH_SETTINGS = "SET LOCAL synchronous_commit = off; SET LOCAL jit = off"
# Batches at once when nobody says otherwise (OTTRECON_RECONCILE_CONCURRENCY; decision 0040): two server cores.
DEFAULT_CONCURRENCY = 2
# 2,000 keys keep one batch's transaction to well under a second while amortising the joins.
BATCH = 2000


@dataclass
class ReconcileReport:
    """Keys reconciled, and alerts opened, reopened and resolved along the way."""

    keys: int = 0
    opened: int = 0
    reopened: int = 0
    resolved: int = 0


async def reconcile_pending(
    pool: asyncpg.Pool,
    *,
    business_tz: str,
    batch: int = BATCH,
    max_batches: int | None = None,
    progress: Progress | None = None,
    concurrency: int = 1,
) -> ReconcileReport:
    """Reconcile changed keys batch by batch until none are left (or max_batches ran).

    Each batch is one transaction: claim changes, lock their keys (and the books, shared), recompute the
    keys' ledger rows and refund bookings, book adjustments of closed dates they changed, sync their alerts.
    Idempotent; safe to run on every worker at once. concurrency: batches run at once, each on its own
    connection of pool (disjoint claims, the same key locks as two workers'): the work is Postgres's, so a
    second connection puts another server core to work (decision 0040). report.keys counts distinct keys
    per batch (a key changed three times since the last run counts once). progress counts keys; an
    interactive one first counts the keys waiting (changes arriving meanwhile may take it past 100%).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    progress = progress or Progress.silent()
    report = ReconcileReport()
    budget = _BatchBudget(max_batches)
    async with db.translate_errors():
        total = None
        if progress.interactive:
            async with pool.acquire() as conn:
                total = await conn.fetchval(PENDING_KEYS)
        progress.stage(unit="keys", total=total)

        async def drain() -> None:
            while budget.take():
                async with pool.acquire() as conn:
                    counts = await _reconcile_batch(conn, batch, business_tz)
                if counts is None:
                    budget.stop()
                    return
                report.keys += counts["keys"]
                progress.advance(counts["keys"])
                report.opened += counts["opened"]
                report.reopened += counts["reopened"]
                report.resolved += counts["resolved"]

        # A TaskGroup: should one batch fail, the others are cancelled (their transactions roll back) and the
        # error is raised; every change they had claimed stays queued. The error comes out as one loop would
        # raise it, not as an ExceptionGroup, so translate_errors still turns Postgres going away into
        # DatabaseUnavailable for every caller (tests/integration/test_reconcile_concurrency.py).
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(concurrency):
                    group.create_task(drain())
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None
    if report.keys:
        logger.info("ledger reconciled", extra=vars(report))
    return report


async def _reconcile_batch(conn: db.Connection, batch: int, business_tz: str) -> dict[str, int] | None:
    """One batch in one transaction; None when no change was left to claim."""
    async with conn.transaction():
        # Derived data only, so the commit need not wait for the disk (decision 0040): a crash that loses
        # this commit loses the claim with it (one transaction), so the changes are still queued and the
        # keys are reconciled again. Any later synchronous commit flushes this one first.
        # No JIT (decision 0048): on tables the planner has no statistics for (a new database, a bulk load
        # before autovacuum's ANALYZE) the ledger statement's estimate passes every JIT threshold, and
        # compiling it with optimisation cost ~2.8 s of CPU per 2,000-key batch, ~1.4 ms a key.
        await conn.execute(BATCH_SETTINGS)
        claimed = await conn.fetch(CLAIM_CHANGES, batch)
        if not claimed:
            return None
        keys = sorted({(k["merchant_id"], k["order_id"]) for k in claimed})
        merchants = [merchant_id for merchant_id, _ in keys]
        orders = [order_id for _, order_id in keys]
        await conn.execute(LOCK_KEYS, merchants, orders, KEY_LOCK_SPACE)
        # Shared, after the key locks (a close takes only this one, so no cycle): no close commits
        # between this batch's recompute and its adjustments (decision 0031).
        await hold_books_shared(conn)
        # Each statement below reads a fresh snapshot, taken after the locks: it sees every change
        # committed before this batch's claim, and every other reconciler's work on these keys.
        await conn.execute(RECONCILE_LEDGER, merchants, orders, business_tz)
        await conn.execute(BOOK_REFUNDS, merchants, orders, business_tz)
        await conn.execute(BOOK_ADJUSTMENTS, merchants, orders)
        counts = await db.fetch_one(conn, SYNC_ALERTS, merchants, orders)
    return {
        "keys": len(keys),
        "opened": counts["opened"],
        "reopened": counts["reopened"],
        "resolved": counts["resolved"],
    }


class _BatchBudget:
    """How many batches may still start (None: until the queue is empty), shared by concurrent drains."""

    def __init__(self, max_batches: int | None) -> None:
        self._left = max_batches
        self._stopped = False

    def take(self) -> bool:
        if self._stopped or self._left == 0:
            return False
        if self._left is not None:
            self._left -= 1
        return True

    def stop(self) -> None:
        self._stopped = True


async def mark_all_dirty(pool: asyncpg.Pool) -> int:
    """Queue every known key for reconciliation; returns how many were queued."""
    async with db.translate_errors(), pool.acquire() as conn:
        status: str = await conn.execute(MARK_ALL_DIRTY)
    return int(status.rsplit(" ", 1)[-1])
