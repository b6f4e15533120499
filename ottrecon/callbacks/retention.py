"""Rejected-callback retention: forged and broken bodies are kept for a while, then deleted.

Every distinct body the worker cannot verify is kept in rejected_callbacks (up to 64 KiB each) so
that a configuration fix can replay it. Anyone on the internet can send such bodies, so they
cannot be kept forever: rows whose last delivery is older than OTTRECON_REJECTED_RETENTION_DAYS
are deleted, except those a person acted on (rejected_callback_events: the audit trail stays).
The worker's cron job also publishes how many distinct rejected bodies arrived in the last hour (last_hour).
"""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from ottrecon import db

# Rows per DELETE, and DELETEs per run: a flood's backlog is worked off over a few runs instead of
# one long transaction holding locks.
BATCH = 5000
MAX_BATCHES = 20
# Oldest first, through rejected_callbacks_last_received_idx; rows another worker is deleting are skipped.
PURGE = """
WITH doomed AS (
    SELECT r.id FROM rejected_callbacks r
    WHERE r.last_received_at < now() - $1::interval
      AND NOT EXISTS (SELECT 1 FROM rejected_callback_events e WHERE e.rejected_id = r.id)
    ORDER BY r.last_received_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM rejected_callbacks r USING doomed WHERE r.id = doomed.id
"""
# Distinct rejected bodies delivered within the last hour (an index range scan).
LAST_HOUR = "SELECT count(*) FROM rejected_callbacks WHERE last_received_at > now() - interval '1 hour'"


async def purge(pool: asyncpg.Pool, retention: timedelta) -> int:
    """Delete rejected callbacks last delivered before now - retention (never audited ones); returns how many.

    Idempotent and safe on every worker at once. Raises DatabaseUnavailable when Postgres is away.
    """
    total = 0
    for _ in range(MAX_BATCHES):
        async with db.translate_errors(), pool.acquire() as conn:
            status = await conn.execute(PURGE, retention, BATCH)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < BATCH:
            break
    return total


async def last_hour(pool: asyncpg.Pool) -> int:
    """Distinct rejected bodies last delivered within the past hour; raises DatabaseUnavailable if Postgres is away."""
    async with db.translate_errors(), pool.acquire() as conn:
        count: int = await conn.fetchval(LAST_HOUR)
    return count
