"""The receiver's side of the callback queue contract (pinned against worker/queue.py by a test)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from arq import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from ottpay.fingerprint import envelope_fingerprint
from webhook.errors import QueueUnavailable

# These must equal worker/queue.py's; tests/integration/test_queue_contract.py checks it.
QUEUE_NAME = "ottrecon:jobs"
INGEST_JOB = "ingest_callbacks"
# A queued callback outlives a worker outage of up to this long (arq's default is one day).
JOB_EXPIRES = timedelta(days=7)


def serialize(obj: Any) -> bytes:
    """arq job serializer: JSON, never pickle (a queue entry must not be able to run code)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def deserialize(raw: bytes) -> Any:
    """arq job deserializer, the inverse of serialize."""
    return json.loads(raw)


def connect(redis_url: str, timeout_s: float) -> ArqRedis:
    """A Redis client that connects lazily, so the receiver starts (not ready) while Redis is down."""
    pool = ConnectionPool.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    return ArqRedis(pool, job_serializer=serialize, job_deserializer=deserialize)


async def enqueue_callback(redis: ArqRedis, envelope: dict[str, Any], timeout_s: float) -> bool:
    """Queue one callback exactly as received; return False if an identical one is already queued.

    Returns only after Redis confirmed the write. The job id is the envelope's fingerprint,
    so an exact redelivery joins the queued job instead of making a second one, while a
    different body with the same md5 (a forgery, say) still gets its own job.
    Raises QueueUnavailable when Redis did not confirm.
    """
    item = {"envelope": envelope, "received_at": datetime.now(UTC).isoformat()}
    job_id = "cb:" + envelope_fingerprint(envelope)
    try:
        async with asyncio.timeout(timeout_s):
            job = await redis.enqueue_job(
                INGEST_JOB, [item], _job_id=job_id, _queue_name=QUEUE_NAME, _expires=JOB_EXPIRES
            )
    except (RedisError, OSError, TimeoutError) as exc:
        raise QueueUnavailable(f"could not enqueue: {exc.__class__.__name__}") from exc
    return job is not None
