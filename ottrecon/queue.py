"""The job queue contract every process shares: queue and job names, Redis keys, the JSON serializer.

The receiver (webhook/queue.py) writes ingest jobs itself in arq's format; the api and the console
enqueue through arq; the worker runs them. tests/integration/test_queue_contract.py pins the format.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from arq import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

# Every key the receiver's enqueue script touches carries this Redis Cluster hash tag, so all of
# them hash to one slot and the script runs unchanged on a cluster (docs/decisions/0033-*).
HASH_TAG = "{ottrecon}"
QUEUE_NAME = HASH_TAG + ":jobs"
# The queue's name before the hash tag; a worker adopts whatever an older process still queues there.
LEGACY_QUEUE_NAME = "ottrecon:jobs"
INGEST_JOB = "ingest_callbacks"
# Set by the receiver per queued body (webhook/queue.py); released by the worker once it is processed.
QUEUED_KEY_PREFIX = HASH_TAG + ":queued:"
# Enqueued by the api process right after it stores an order or a refund.
PROCESS_ORDER_JOB = "process_order"
PROCESS_REFUND_JOB = "process_refund"
# Enqueued by the finance console's replay button (the api holds no sign keys; the worker does).
REPLAY_REJECTED_JOB = "replay_rejected_callback"
# Callbacks whose processing could not finish even after every retry, kept for `ottrecon requeue-dead`.
DEAD_LETTER_KEY = "ottrecon:jobs:dead"
# A queued callback outlives a worker outage of up to this long (arq's default is one day): the receiver's
# jobs and the dead letters `ottrecon requeue-dead` puts back alike.
JOB_EXPIRES = timedelta(days=7)
# How long the api and the CLI wait for Redis when they kick a job (best effort: the work is due in Postgres anyway).
KICK_TIMEOUT_S = 2.0


# Moves up to ARGV[1] jobs, scores (due times) kept, from the legacy queue (KEYS[1]) to the queue
# (KEYS[2]); a job already in the queue keeps its own score. Returns how many it moved.
_ADOPT_SCRIPT = """
local jobs = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
for i = 1, #jobs, 2 do
    redis.call('ZADD', KEYS[2], 'NX', jobs[i + 1], jobs[i])
    redis.call('ZREM', KEYS[1], jobs[i])
end
return #jobs / 2
"""


def serialize(obj: Any) -> bytes:
    """arq job serializer: JSON, never pickle (a queue entry must not be able to run code)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def deserialize(raw: bytes) -> Any:
    """arq job deserializer, the inverse of serialize (an ingest job's callbacks come as CallbackItems, a list)."""
    obj = json.loads(raw)
    if isinstance(obj, dict) and obj.get("f") == INGEST_JOB:
        args = obj.get("a")
        if isinstance(args, list) and args and type(args[0]) is list:
            obj["a"] = [CallbackItems(args[0]), *args[1:]]
    return obj


class CallbackItems(list[Any]):
    """An ingest job's callbacks: a list whose repr is its length.

    arq formats every job's arguments with repr for a start line (arq.worker logs at WARNING here, so
    the line is dropped) before it runs the job: for ~64 callback bodies that cost ~2 % of the worker's
    CPU (issue 13's profile), and a body has no place in a log line anyway.
    """

    def __repr__(self) -> str:
        return f"<{len(self)} callbacks>"


def connect(redis_url: str, timeout_s: float) -> ArqRedis:
    """A Redis client that connects lazily, so a process starts (not ready) while Redis is down."""
    pool = ConnectionPool.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    client = ArqRedis(pool, job_serializer=serialize, job_deserializer=deserialize)
    # The client owns its pool, as redis-py's Redis.from_pool makes one (which takes no arq serializers): a plain
    # aclose() closes its sockets. A client given a pool leaves it open otherwise, until the collector finds it.
    client.auto_close_connection_pool = True
    return client


async def adopt_legacy_jobs(redis: ArqRedis, batch: int = 1000) -> int:
    """Move jobs queued under LEGACY_QUEUE_NAME by a process of an older version into QUEUE_NAME.

    Idempotent, safe to run from several workers at once. A job keeps its id, payload and due
    time (arq finds the payload by id, whatever queue listed it). Only a single-node Redis can
    hold a legacy queue (the old receiver's script could not run on a cluster), so the
    two-key script only runs when one exists. Returns how many jobs moved; raises RedisError.
    """
    moved = 0
    while await redis.exists(LEGACY_QUEUE_NAME):
        moved += int(await redis.eval(_ADOPT_SCRIPT, 2, LEGACY_QUEUE_NAME, QUEUE_NAME, str(batch)))  # type: ignore[misc]
    return moved


async def kick(redis: ArqRedis, job: str, pk: int) -> bool:
    """Ask a worker to handle an order/refund now. Best effort: a stored order is due in Postgres
    anyway and the worker's scheduled retry takes it if this enqueue is lost. Returns False on failure."""
    try:
        await redis.enqueue_job(job, pk, _queue_name=QUEUE_NAME, _job_id=f"{job}:{pk}:first")
    except (RedisError, OSError, TimeoutError):
        return False
    return True
