"""The dead-letter list: callbacks parked after every retry, counted, and put back on the queue once fixed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from arq import ArqRedis
from redis.asyncio import ConnectionPool

from ottrecon.progress import Progress
from ottrecon.queue import DEAD_LETTER_KEY, INGEST_JOB, QUEUE_NAME, deserialize, serialize


async def park(redis: ArqRedis, callbacks: list[Any], *, reason: str) -> None:
    """Append one entry (the callbacks as queued, why, when) to the dead-letter list, for `ottrecon requeue-dead`."""
    entry = {"callbacks": callbacks, "reason": reason, "failed_at": datetime.now(UTC).isoformat()}
    await redis.rpush(DEAD_LETTER_KEY, serialize(entry))  # type: ignore[misc]  # redis-py types list commands sync|async


async def dead_letter_count(redis: ArqRedis) -> int:
    """How many dead-lettered entries wait for `ottrecon requeue-dead`."""
    count: int = await redis.llen(DEAD_LETTER_KEY)  # type: ignore[misc]  # redis-py types list commands sync|async
    return count


async def requeue_dead(redis_url: str, progress: Progress | None = None) -> int:
    """Move every dead-lettered entry back to the callback queue; return how many.

    Each entry becomes one new job. An entry leaves the list only after its new job is queued, so a crash in between
    queues it twice at worst, which the idempotent worker absorbs. progress counts entries moved.
    """
    progress = progress or Progress.silent()
    redis = ArqRedis(ConnectionPool.from_url(redis_url), job_serializer=serialize, job_deserializer=deserialize)
    moved = 0
    try:
        progress.stage(unit="entries", total=await dead_letter_count(redis) if progress.interactive else None)
        while (raw := await redis.lindex(DEAD_LETTER_KEY, 0)) is not None:  # type: ignore[misc]  # redis-py typing
            entry = json.loads(raw)
            await redis.enqueue_job(INGEST_JOB, entry["callbacks"], _queue_name=QUEUE_NAME)
            await redis.lpop(DEAD_LETTER_KEY)  # type: ignore[misc]  # redis-py types list commands sync|async
            moved += 1
            progress.advance()
    finally:
        await redis.aclose(close_connection_pool=True)
    return moved
