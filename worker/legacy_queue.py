"""Scheduled and at start: adopt jobs an older receiver, api or worker queued under the queue's old name."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from arq import ArqRedis
from redis.exceptions import RedisError

from ottrecon.queue import LEGACY_QUEUE_NAME, QUEUE_NAME, adopt_legacy_jobs

if TYPE_CHECKING:
    from worker.context import JobContext

logger = logging.getLogger("ottrecon.worker")


async def adopt_now(redis: ArqRedis) -> int:
    """Move whatever waits in the legacy queue into the queue; Redis away: 0, the scheduled run tries again.

    The queue gained its Redis Cluster hash tag in 0033 (docs/decisions/0033-*); until every
    process of the older version is gone, they may still queue under the old name.
    """
    try:
        moved = await adopt_legacy_jobs(redis)
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning("redis unavailable; legacy queue not checked", extra={"error": exc.__class__.__name__})
        return 0
    if moved:
        logger.info(
            "jobs adopted from the legacy queue", extra={"moved": moved, "from": LEGACY_QUEUE_NAME, "to": QUEUE_NAME}
        )
    return moved


async def adopt_legacy_queue(ctx: JobContext) -> int:
    """Scheduled: adopt_now; returns how many jobs moved."""
    return await adopt_now(ctx["redis"])
