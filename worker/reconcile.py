"""The reconciler: recompute ledger rows and alerts for every key whose evidence changed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from worker import db

logger = logging.getLogger("ottrecon.reconcile")

_SQL = Path(__file__).with_name("sql")
RECONCILE_LEDGER = (_SQL / "reconcile_ledger.sql").read_text(encoding="utf-8")
SYNC_ALERTS = (_SQL / "sync_alerts.sql").read_text(encoding="utf-8")
# Take a batch of changed keys; SKIP LOCKED lets several workers reconcile disjoint batches.
# A key changed again while its batch is being reconciled is marked again once this commits.
CLAIM_DIRTY = """
DELETE FROM recon_dirty WHERE (merchant_id, order_id) IN (
    SELECT merchant_id, order_id FROM recon_dirty ORDER BY marked_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING merchant_id, order_id
"""
# Everything known from any source, to rebuild the whole ledger (after a rules change, say).
MARK_ALL_DIRTY = """
INSERT INTO recon_dirty (merchant_id, order_id)
SELECT merchant_id, order_id FROM orders
UNION SELECT merchant_id, order_id FROM payments
UNION SELECT merchant_id, order_id FROM callbacks
UNION SELECT merchant_id, order_id FROM statement_lines
ON CONFLICT ON CONSTRAINT recon_dirty_pkey DO NOTHING
"""
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
    pool: asyncpg.Pool, *, business_tz: str, batch: int = BATCH, max_batches: int | None = None
) -> ReconcileReport:
    """Reconcile changed keys batch by batch until none are left (or max_batches ran).

    Each batch is one transaction: claim keys, recompute their ledger rows, sync their alerts.
    Idempotent; safe to run on every worker at once.
    """
    report = ReconcileReport()
    done = 0
    async with db.translate_errors():
        while max_batches is None or done < max_batches:
            async with pool.acquire() as conn, conn.transaction():
                keys = await conn.fetch(CLAIM_DIRTY, batch)
                if not keys:
                    break
                merchants = [k["merchant_id"] for k in keys]
                orders = [k["order_id"] for k in keys]
                await conn.execute(RECONCILE_LEDGER, merchants, orders, business_tz)
                counts = await conn.fetchrow(SYNC_ALERTS, merchants, orders)
            report.keys += len(keys)
            report.opened += counts["opened"]
            report.reopened += counts["reopened"]
            report.resolved += counts["resolved"]
            done += 1
    if report.keys:
        logger.info("ledger reconciled", extra=vars(report))
    return report


async def mark_all_dirty(pool: asyncpg.Pool) -> int:
    """Queue every known key for reconciliation; returns how many were newly queued."""
    async with db.translate_errors(), pool.acquire() as conn:
        status: str = await conn.execute(MARK_ALL_DIRTY)
    return int(status.rsplit(" ", 1)[-1])
