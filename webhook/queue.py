"""The receiver's writer of ingest jobs: arq's job format written in one Lua call (pinned by a contract test)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from arq import ArqRedis
from redis.exceptions import RedisError

from ottpay.fingerprint import envelope_fingerprint
from ottrecon.queue import INGEST_JOB, QUEUE_NAME, QUEUED_KEY_PREFIX, serialize
from webhook.errors import QueueUnavailable

# While a callback is queued, its QUEUED_KEY_PREFIX key (per exact body) makes a redelivery join it
# instead of queueing it again; the worker deletes it once the callback is processed.
# arq's own key for a job's payload (arq.constants.job_key_prefix), written here directly.
ARQ_JOB_KEY_PREFIX = "arq:job:"
# A queued callback outlives a worker outage of up to this long (arq's default is one day).
JOB_EXPIRES = timedelta(days=7)

# One round trip queues a whole batch as ONE arq job: per callback, claim its queued-key (a
# redelivery of a body already queued is skipped), then write the job exactly as arq's
# enqueue_job would (JSON payload under arq:job:<id>, id in the queue's sorted set). Atomic:
# either the job and all its claims exist, or none. Returns 1/0 per callback: newly queued?
ENQUEUE_SCRIPT = """
local fresh, items = {}, {}
for i = 6, #ARGV, 2 do
    if redis.call('SET', ARGV[i], ARGV[1], 'NX', 'PX', ARGV[3]) then
        items[#items + 1] = ARGV[i + 1]
        fresh[#fresh + 1] = 1
    else
        fresh[#fresh + 1] = 0
    end
end
if #items > 0 then
    local job = '{"t":null,"f":"' .. ARGV[4] .. '","a":[[' .. table.concat(items, ',')
        .. ']],"k":{},"et":' .. ARGV[2] .. '}'
    redis.call('PSETEX', ARGV[5] .. ARGV[1], ARGV[3], job)
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return fresh
"""


@dataclass(frozen=True)
class PreparedCallback:
    """One callback ready for the queue: its identity and its job entry, already serialized.

    Built in the request's own handler (prepare), so nothing about one body can fail the shared
    Redis write that carries it with others: a batch fails only for a reason that concerns all
    of it, Redis itself (docs/decisions/0016-per-request-work-before-batching.md).
    """

    fingerprint: str
    item: bytes


def prepare(envelope: dict[str, Any], received_at: datetime) -> PreparedCallback:
    """Fingerprint and serialize one shape-checked envelope.

    Raises ValueError (UnicodeEncodeError included) if the body cannot be encoded; the shape
    check refuses such bodies first, so that is a bug, answered for this request alone.
    """
    fingerprint = envelope_fingerprint(envelope)
    item = {"envelope": envelope, "received_at": received_at.isoformat(), "fingerprint": fingerprint}
    return PreparedCallback(fingerprint, serialize(item))


async def enqueue_callbacks(redis: ArqRedis, callbacks: Sequence[PreparedCallback]) -> list[bool]:
    """Queue prepared callbacks exactly as received, all in one job and one Redis round trip.

    Returns, per callback, True if newly queued or False if an identical body is already queued
    (it then joins that job). Returns only after Redis confirmed the write; raises
    QueueUnavailable when it did not (nothing was queued). A different body with the same md5
    (a forgery, say) has another fingerprint and is queued on its own.
    """
    args: list[str | bytes | int] = [
        uuid.uuid4().hex,
        int(time.time() * 1000),
        int(JOB_EXPIRES.total_seconds() * 1000),
        INGEST_JOB,
        ARQ_JOB_KEY_PREFIX,
    ]
    for callback in callbacks:
        args += [QUEUED_KEY_PREFIX + callback.fingerprint, callback.item]
    try:
        fresh = await redis.eval(ENQUEUE_SCRIPT, 1, QUEUE_NAME, *args)  # type: ignore[misc, arg-type]  # redis-py typing
    except (RedisError, OSError, TimeoutError) as exc:
        raise QueueUnavailable(f"could not enqueue: {exc.__class__.__name__}") from exc
    return [bool(flag) for flag in fresh]
