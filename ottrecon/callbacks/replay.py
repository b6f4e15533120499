"""Replay rejected callbacks after the configuration was fixed (`ottrecon replay-rejected`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import asyncpg

from ottpay.keys import MerchantKeys
from ottrecon import db
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.verdicts import VerifiedCallback
from ottrecon.callbacks.verify import judge

logger = logging.getLogger("ottrecon.replay")

# Open rejections after a given id, oldest first (keyset pagination: constant cost per page).
NEXT_OPEN_PAGE = """
SELECT id, envelope, received_at FROM rejected_callbacks
WHERE resolved_at IS NULL AND id > $1 ORDER BY id LIMIT $2
"""
# A rejection that now verifies: link it to the recorded callback and close it.
MARK_RESOLVED = """
UPDATE rejected_callbacks
SET resolved_at = now(), last_replayed_at = now(), resolution = $2,
    callback_id = (SELECT id FROM callbacks WHERE merchant_id = $3 AND md5 = $4)
WHERE id = $1 AND resolved_at IS NULL
"""
# A rejection that still fails: keep it open with the current reason.
MARK_STILL_REJECTED = """
UPDATE rejected_callbacks SET reason = $2, detail = $3, last_replayed_at = now() WHERE id = $1
"""
# One open rejection, locked so two replays of it cannot run at once.
LOCK_OPEN = """
SELECT id, envelope, received_at FROM rejected_callbacks WHERE id = $1 AND resolved_at IS NULL FOR UPDATE
"""
# Who replayed what, with which result (finance's audit trail).
RECORD_EVENT = "INSERT INTO rejected_callback_events (rejected_id, action, actor) VALUES ($1, $2, $3)"
# Merchant ids this worker holds keys for (never the keys), so the console can offer replays.
REPORT_MERCHANTS = """
INSERT INTO configured_merchants (merchant_id, key_count, reported_at)
SELECT * , now() FROM unnest($1::text[], $2::int4[])
ON CONFLICT (merchant_id) DO UPDATE SET key_count = EXCLUDED.key_count, reported_at = now()
"""


@dataclass
class ReplayReport:
    """What a replay did: newly recorded, already recorded elsewhere, still rejected."""

    recorded: int = 0
    duplicate: int = 0
    still_rejected: int = 0  # the field names are the outcomes replay_one returns


async def replay_rejected(
    pool: asyncpg.Pool, merchants: MerchantKeys, page_size: int = 500, *, actor: str = "cli"
) -> ReplayReport:
    """Re-verify every open rejection with the current keys; idempotent and safe to run concurrently.

    Each rejection is handled in its own transaction together with the callback and payment
    it records, so an interrupted replay can simply be run again.
    """
    report = ReplayReport()
    last_id = 0
    async with db.translate_errors():
        while True:
            async with pool.acquire() as conn:
                rows = await conn.fetch(NEXT_OPEN_PAGE, last_id, page_size)
            if not rows:
                return report
            for row in rows:
                last_id = row["id"]
                outcome = await replay_one(pool, merchants, row["id"], actor=actor)
                if outcome is not None:
                    setattr(report, outcome, getattr(report, outcome) + 1)


async def replay_one(pool: asyncpg.Pool, merchants: MerchantKeys, rejected_id: int, *, actor: str) -> str | None:
    """Re-verify one open rejection; returns 'recorded', 'duplicate' or 'still_rejected' (None if
    it was already resolved). Audited in rejected_callback_events with the actor."""
    async with db.translate_errors(), pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(LOCK_OPEN, rejected_id)
        if row is None:
            return None
        verdict = judge(json.loads(row["envelope"]), row["received_at"], merchants)
        if isinstance(verdict, VerifiedCallback):
            new = await callback_store.record_on(conn, [verdict], [])
            outcome = "recorded" if new else "duplicate"
            await conn.execute(MARK_RESOLVED, row["id"], outcome, verdict.merchant_id, verdict.md5)
            logger.info(
                "rejected callback replayed",
                extra={"merchant_id": verdict.merchant_id, "order_id": verdict.order_id, "resolution": outcome},
            )
        else:
            outcome = "still_rejected"
            await conn.execute(MARK_STILL_REJECTED, row["id"], verdict.reason, verdict.detail)
        await conn.execute(RECORD_EVENT, row["id"], outcome, actor)
        return outcome


async def report_configured_merchants(pool: asyncpg.Pool, merchants: MerchantKeys) -> None:
    """Tell the console which merchants this worker can verify (ids and key counts only)."""
    ids = list(merchants)
    async with db.translate_errors(), pool.acquire() as conn:
        await conn.execute(REPORT_MERCHANTS, ids, [len(merchants[m]) for m in ids])
