"""The dead-letter list: callbacks parked after every retry, counted, and put back on the queue once fixed.

`requeue_dead` may run several times at once (two operators, a cron and an operator) and may be killed at
any point; it never loses an entry (docs/decisions/0025-requeue-dead-claims-each-entry.md). Each run moves
one entry at a time, atomically, from the dead-letter list into a processing list of its own, queues it, and
only then deletes it. A run holds a lease while it works; a later run gives the entries of a run whose lease
lapsed (it was killed) back to the dead-letter list. A killed run can therefore queue an entry twice at worst,
which the idempotent worker absorbs; it can never queue one zero times.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from arq import ArqRedis

from ottrecon.progress import Progress
from ottrecon.queue import DEAD_LETTER_KEY, INGEST_JOB, JOB_EXPIRES, QUEUE_NAME, connect, serialize

# Every key below starts with DEAD_LETTER_KEY, so they share its hash tag should it get one (Redis Cluster).
# The ids of runs that may hold a processing list (killed runs' ids stay until a later run recovers them).
RUNS_KEY = f"{DEAD_LETTER_KEY}:requeue-runs"
# How long a run that stops renewing its lease (killed, or stuck) keeps its claimed entry from other runs.
# A run renews it before every entry; an entry takes a millisecond or two to queue.
LEASE_S = 60.0
# How long one Redis command may take before the run gives up (the command fails, exit code 1): a Redis that
# stops answering must not hang an operator's command for ever. Well under LEASE_S, so a run gives up on a
# stalled Redis before another run may take its entry back.
REDIS_TIMEOUT_S = 10.0

# Give a run's processing list back to the dead-letter list, at its head, if the run's lease lapsed; forget the
# run once its list is empty. One script: a run cannot claim an entry between the lease check and the move.
RECOVER_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'RIGHT', 'LEFT') do moved = moved + 1 end
redis.call('SREM', KEYS[4], ARGV[1])
return moved
"""


def _processing_key(run_id: str) -> str:
    return f"{DEAD_LETTER_KEY}:requeuing:{run_id}"


def _lease_key(run_id: str) -> str:
    return f"{DEAD_LETTER_KEY}:requeuing:{run_id}:lease"


async def park(redis: ArqRedis, callbacks: list[Any], *, reason: str) -> None:
    """Append one entry (the callbacks as queued, why, when) to the dead-letter list, for `ottrecon requeue-dead`."""
    entry = {"callbacks": callbacks, "reason": reason, "failed_at": datetime.now(UTC).isoformat()}
    await redis.rpush(DEAD_LETTER_KEY, serialize(entry))  # type: ignore[misc]  # redis-py types list commands sync|async


async def dead_letter_count(redis: ArqRedis) -> int:
    """How many dead-lettered entries are not back on the queue yet: those waiting for `ottrecon requeue-dead`,
    and those a requeue run holds right now or held when it was killed (the next run gives them back)."""
    runs = await redis.smembers(RUNS_KEY)  # type: ignore[misc]  # redis-py types set commands sync|async
    async with redis.pipeline(transaction=False) as pipe:
        pipe.llen(DEAD_LETTER_KEY)
        for run_id in sorted(runs):
            pipe.llen(_processing_key(run_id.decode()))
        lengths: list[int] = await pipe.execute()
    return sum(lengths)


async def requeue_dead(
    redis_url: str, *, lease_s: float = LEASE_S, timeout_s: float = REDIS_TIMEOUT_S, progress: Progress | None = None
) -> int:
    """Move every dead-lettered entry back to the callback queue, each as one new job; return how many.

    Safe to run concurrently with itself and with workers that park new entries. An entry leaves Redis's
    bookkeeping only after its job is queued, so a run killed in between queues it twice at worst (once by
    the next run, after the lease lapses), which the idempotent worker absorbs. progress counts entries moved.
    A Redis command that takes longer than timeout_s raises redis.exceptions.TimeoutError (a RedisError).
    """
    progress = progress or Progress.silent()
    redis = connect(redis_url, timeout_s)
    run_id = uuid.uuid4().hex
    processing, lease = _processing_key(run_id), _lease_key(run_id)
    lease_ms = max(1, round(lease_s * 1000))
    moved = 0
    try:
        await _recover_abandoned(redis)
        progress.stage(unit="entries", total=await dead_letter_count(redis) if progress.interactive else None)
        while True:
            # Lease, registration and claim in one transaction: a recovering run sees either a live lease or
            # a processing list that no claim can still be on its way into.
            async with redis.pipeline(transaction=True) as pipe:
                pipe.set(lease, b"1", px=lease_ms)
                pipe.sadd(RUNS_KEY, run_id)
                pipe.lmove(DEAD_LETTER_KEY, processing, "LEFT", "RIGHT")
                *_, raw = await pipe.execute()
            if raw is None:
                break
            entry = json.loads(raw)
            await redis.enqueue_job(INGEST_JOB, entry["callbacks"], _queue_name=QUEUE_NAME, _expires=JOB_EXPIRES)
            # Removes nothing if a recovering run (after our lease lapsed) already gave it back: then it is
            # queued twice, never zero times.
            await redis.lrem(processing, 1, raw)  # type: ignore[misc]  # redis-py types list commands sync|async
            moved += 1
            progress.advance()
        async with redis.pipeline(transaction=True) as pipe:
            pipe.srem(RUNS_KEY, run_id)
            pipe.delete(lease)
            await pipe.execute()
    finally:
        # Shielded: a caller that cancels us while we close (Ctrl-C, a supervisor's timeout) would otherwise stop
        # redis-py's pool before it closed its sockets, and the connection would stay open until collected.
        await asyncio.shield(redis.aclose(close_connection_pool=True))
    return moved


async def _recover_abandoned(redis: ArqRedis) -> int:
    """Give the entries of runs whose lease lapsed back to the dead-letter list; return how many."""
    recovered = 0
    for raw_id in await redis.smembers(RUNS_KEY):  # type: ignore[misc]  # redis-py types set commands sync|async
        run_id = raw_id.decode()
        keys = [_lease_key(run_id), _processing_key(run_id), DEAD_LETTER_KEY, RUNS_KEY]
        moved: int = await redis.eval(RECOVER_SCRIPT, len(keys), *keys, run_id)  # type: ignore[misc]  # redis-py typing
        recovered += max(moved, 0)
    return recovered
