"""The receiver's writer of ingest jobs: arq's job format written in one Lua call (pinned by a contract test)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError, RedisError

from ottpay.fingerprint import canonical_fingerprint, canonical_json
from ottrecon.queue import HASH_TAG, INGEST_JOB, JOB_EXPIRES, QUEUE_NAME, QUEUED_KEY_PREFIX
from webhook.errors import QueueUnavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

# While a callback is queued, its QUEUED_KEY_PREFIX key (per exact body) makes a redelivery join it
# instead of queueing it again; the worker deletes it once the callback is processed.
# arq's own key for a job's payload (arq.constants.job_key_prefix), written here directly.
ARQ_JOB_KEY_PREFIX = "arq:job:"

# One round trip queues a whole batch as ONE arq job: per callback, claim its queued-key (a
# redelivery of a body already queued is skipped), then write the job exactly as arq's
# enqueue_job would (JSON payload under arq:job:<id>, id in the queue's sorted set). Atomic:
# either the job and all its claims exist, or none. Returns 1/0 per callback: newly queued?
# Every key comes in through KEYS and carries HASH_TAG, so on Redis Cluster the call routes to
# the one node that holds them all (tests/integration/test_queue_cluster.py).
#   KEYS: [1] the queue, [2] the job's payload key, [3..] one queued-key per callback
#   ARGV: [1] job id, [2] enqueue time (ms), [3] lifetime (ms), [4] job function, [5..] one item per callback
ENQUEUE_SCRIPT = """
local fresh, items = {}, {}
for i = 3, #KEYS do
    if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[3]) then
        items[#items + 1] = ARGV[i + 2]
        fresh[#fresh + 1] = 1
    else
        fresh[#fresh + 1] = 0
    end
end
if #items > 0 then
    local job = '{"t":null,"f":"' .. ARGV[4] .. '","a":[[' .. table.concat(items, ',')
        .. ']],"k":{},"et":' .. ARGV[2] .. '}'
    redis.call('PSETEX', KEYS[2], ARGV[3], job)
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
return fresh
"""
# Called by its SHA-1 (EVALSHA): the ~1 KB script is sent once per connection's server, not per write.
ENQUEUE_SHA = hashlib.sha1(ENQUEUE_SCRIPT.encode("ascii")).hexdigest()
_LIFETIME_MS = int(JOB_EXPIRES.total_seconds() * 1000)


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

    The item is `ottrecon.queue.serialize({"envelope": …, "received_at": …, "fingerprint": …})`
    byte for byte, with the envelope's keys sorted: its canonical JSON is encoded once and
    serves both the fingerprint and the item (tests/unit/test_prepare_item.py holds the two equal).
    Raises ValueError (UnicodeEncodeError included) if the body cannot be encoded; the shape
    check refuses such bodies first, so that is a bug, answered for this request alone.
    """
    canonical = canonical_json(envelope).encode("utf-8")
    fingerprint = canonical_fingerprint(canonical)
    # The timestamp and the hex digest are ASCII that JSON never escapes.
    item = b"".join(
        (
            b'{"envelope":',
            canonical,
            b',"received_at":"',
            received_at.isoformat().encode("ascii"),
            b'","fingerprint":"',
            fingerprint.encode("ascii"),
            b'"}',
        )
    )
    return PreparedCallback(fingerprint, item)


async def enqueue_callbacks(redis: Redis | RedisCluster, callbacks: Sequence[PreparedCallback]) -> list[bool]:
    """Queue prepared callbacks exactly as received, all in one job and one Redis round trip.

    Returns, per callback, True if newly queued or False if an identical body is already queued
    (it then joins that job). Returns only after Redis confirmed the write; raises
    QueueUnavailable when it did not (nothing was queued). A different body with the same md5
    (a forgery, say) has another fingerprint and is queued on its own.
    """
    job_id = HASH_TAG + uuid.uuid4().hex
    keys = [QUEUE_NAME, ARQ_JOB_KEY_PREFIX + job_id]
    keys += [QUEUED_KEY_PREFIX + callback.fingerprint for callback in callbacks]
    args: list[str | bytes | int] = [job_id, int(time.time() * 1000), _LIFETIME_MS, INGEST_JOB]
    args += [callback.item for callback in callbacks]
    try:
        try:
            fresh = await redis.evalsha(ENQUEUE_SHA, len(keys), *keys, *args)  # type: ignore[misc, arg-type]  # redis-py typing
        except NoScriptError:
            # First write to this server (or after SCRIPT FLUSH / a restart): nothing ran; load and retry.
            await redis.script_load(ENQUEUE_SCRIPT)
            fresh = await redis.evalsha(ENQUEUE_SHA, len(keys), *keys, *args)  # type: ignore[misc, arg-type]
    except (RedisError, OSError, TimeoutError) as exc:
        raise QueueUnavailable(f"could not enqueue: {exc.__class__.__name__}") from exc
    return [bool(flag) for flag in fresh]
