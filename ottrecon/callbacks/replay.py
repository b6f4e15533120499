"""Replay rejected callbacks after the configuration was fixed (`ottrecon replay-rejected`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import asyncpg

from ottpay.keys import MerchantKeys
from ottrecon import db
from ottrecon.callbacks import store
from ottrecon.callbacks.verdicts import VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.progress import Progress

logger = logging.getLogger("ottrecon.replay")


@dataclass
class ReplayReport:
    """What a replay did: newly recorded, already recorded elsewhere, still rejected."""

    recorded: int = 0
    duplicate: int = 0
    still_rejected: int = 0  # the field names are the outcomes replay_one returns


async def replay_rejected(
    pool: asyncpg.Pool,
    merchants: MerchantKeys,
    page_size: int = 500,
    *,
    actor: str = "cli",
    progress: Progress | None = None,
) -> ReplayReport:
    """Re-verify every open rejection with the current keys; idempotent and safe to run concurrently.

    Each rejection is handled in its own transaction together with the callback and payment
    it records, so an interrupted replay can simply be run again. progress counts rejections looked at.
    """
    progress = progress or Progress.silent()
    report = ReplayReport()
    last_id = 0
    async with db.translate_errors():
        total = None
        if progress.interactive:
            async with pool.acquire() as conn:
                total = await conn.fetchval(store.COUNT_OPEN)
        progress.stage(unit="callbacks", total=total)
        while True:
            async with pool.acquire() as conn:
                rows = await conn.fetch(store.NEXT_OPEN_PAGE, last_id, page_size)
            if not rows:
                return report
            for row in rows:
                last_id = row["id"]
                outcome = await replay_one(pool, merchants, row["id"], actor=actor)
                progress.advance()
                if outcome is not None:
                    setattr(report, outcome, getattr(report, outcome) + 1)


async def replay_one(pool: asyncpg.Pool, merchants: MerchantKeys, rejected_id: int, *, actor: str) -> str | None:
    """Re-verify one open rejection; returns 'recorded', 'duplicate' or 'still_rejected' (None if
    it was already resolved). Audited in rejected_callback_events with the actor."""
    async with db.translate_errors(), pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(store.LOCK_OPEN, rejected_id)
        if row is None:
            return None
        verdict = judge(json.loads(row["envelope"]), row["received_at"], merchants)
        if isinstance(verdict, VerifiedCallback):
            new = await store.record_on(conn, [verdict], [])
            outcome = "recorded" if new else "duplicate"
            await conn.execute(
                store.MARK_RESOLVED, row["id"], outcome, verdict.merchant_id, verdict.md5, row["envelope"]
            )
            logger.info(
                "rejected callback replayed",
                extra={"merchant_id": verdict.merchant_id, "order_id": verdict.order_id, "resolution": outcome},
            )
        else:
            outcome = "still_rejected"
            await conn.execute(store.MARK_STILL_REJECTED, row["id"], verdict.reason, verdict.detail)
        await conn.execute(store.RECORD_REPLAY_EVENT, row["id"], outcome, actor)
        return outcome


async def report_configured_merchants(pool: asyncpg.Pool, merchants: MerchantKeys) -> None:
    """Tell the console which merchants this worker can verify (ids and key counts only)."""
    ids = list(merchants)
    async with db.translate_errors(), pool.acquire() as conn:
        await conn.execute(store.REPORT_MERCHANTS, ids, [len(merchants[m]) for m in ids])
