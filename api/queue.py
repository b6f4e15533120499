"""The API's side of the job queue contract (pinned against worker/queue.py by a test)."""

from __future__ import annotations

import json
from typing import Any

from arq import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

# These must equal worker/queue.py's; tests/integration/test_queue_contract.py checks it.
QUEUE_NAME = "ottrecon:jobs"
PROCESS_ORDER_JOB = "process_order"
PROCESS_REFUND_JOB = "process_refund"
# The finance console's replay button; a worker runs it (it holds the sign keys, the api does not).
REPLAY_REJECTED_JOB = "replay_rejected_callback"


def serialize(obj: Any) -> bytes:
    """arq job serializer: JSON, never pickle."""
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def deserialize(raw: bytes) -> Any:
    return json.loads(raw)


def connect(redis_url: str) -> ArqRedis:
    pool = ConnectionPool.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    return ArqRedis(pool, job_serializer=serialize, job_deserializer=deserialize)


async def kick(redis: ArqRedis, job: str, pk: int) -> bool:
    """Ask a worker to handle an order/refund now. Best effort: a stored order is due in Postgres
    anyway and the worker's scheduled retry takes it if this enqueue is lost. Returns False on failure."""
    try:
        await redis.enqueue_job(job, pk, _queue_name=QUEUE_NAME, _job_id=f"{job}:{pk}:first")
    except (RedisError, OSError, TimeoutError):
        return False
    return True
