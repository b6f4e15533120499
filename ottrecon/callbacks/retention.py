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
from ottrecon.callbacks import store

# Rows per DELETE, and DELETEs per run: a flood's backlog is worked off over a few runs instead of
# one long transaction holding locks.
BATCH = 5000
MAX_BATCHES = 20


async def purge(pool: asyncpg.Pool, retention: timedelta) -> int:
    """Delete rejected callbacks last delivered before now - retention (never audited ones); returns how many.

    Idempotent and safe on every worker at once. Raises DatabaseUnavailable when Postgres is away.
    """
    total = 0
    for _ in range(MAX_BATCHES):
        async with db.translate_errors(), pool.acquire() as conn:
            status = await conn.execute(store.PURGE_REJECTED, retention, BATCH)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < BATCH:
            break
    return total


async def last_hour(pool: asyncpg.Pool) -> int:
    """Distinct rejected bodies last delivered within the past hour; raises DatabaseUnavailable if Postgres is away."""
    async with db.translate_errors(), pool.acquire() as conn:
        count: int = await conn.fetchval(store.REJECTED_LAST_HOUR)
    return count
