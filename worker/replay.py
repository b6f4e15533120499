"""Replay rejected callbacks after the configuration was fixed (`ottrecon replay-rejected`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import asyncpg

from ottpay.keys import MerchantKeys
from worker import db
from worker.verify import VerifiedCallback, judge

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


@dataclass
class ReplayReport:
    """What a replay did: newly recorded, already recorded elsewhere, still rejected."""

    recorded: int = 0
    duplicate: int = 0
    still_rejected: int = 0


async def replay_rejected(pool: asyncpg.Pool, merchants: MerchantKeys, page_size: int = 500) -> ReplayReport:
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
                await _replay_one(pool, merchants, row, report)


async def _replay_one(pool: asyncpg.Pool, merchants: MerchantKeys, row: asyncpg.Record, report: ReplayReport) -> None:
    verdict = judge(json.loads(row["envelope"]), row["received_at"], merchants)
    async with pool.acquire() as conn, conn.transaction():
        if isinstance(verdict, VerifiedCallback):
            new = await db.record_on(conn, [verdict], [])
            resolution = "recorded" if new else "duplicate"
            await conn.execute(MARK_RESOLVED, row["id"], resolution, verdict.merchant_id, verdict.md5)
            setattr(report, resolution, getattr(report, resolution) + 1)
            logger.info(
                "rejected callback replayed",
                extra={"merchant_id": verdict.merchant_id, "order_id": verdict.order_id, "resolution": resolution},
            )
        else:
            await conn.execute(MARK_STILL_REJECTED, row["id"], verdict.reason, verdict.detail)
            report.still_rejected += 1
