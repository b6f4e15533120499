"""Claim arq jobs in bulk: one Redis script call takes every job of a poll that this worker has room for.

arq's `Worker.start_jobs` claims one job at a time: WATCH the job's in-progress key, EXISTS it,
ZSCORE the job in the queue, then MULTI/PSETEX/EXEC, four round trips per job. At issue 13's load
(a pre-filled queue, about 64 callbacks per job) arq's Redis traffic took about a third of the
worker's CPU. The script makes the same checks and sets the same in-progress key (the lease of
decision 0019) for a whole list of ids, atomically, in one round trip (decision 0036).
"""

from __future__ import annotations

from collections.abc import Sequence

from arq import ArqRedis
from arq.constants import in_progress_key_prefix
from redis.commands.core import AsyncScript

# KEYS[1] the queue (a sorted set of job ids by due time in ms), KEYS[i + 1] the in-progress key of
# ARGV[i + 3]; ARGV[1] now in ms, ARGV[2] the lease in ms, ARGV[3] how many jobs to claim at most.
# A job is claimed, as arq's start_jobs would, when nobody holds its in-progress key and it is
# still queued and due; ids are tried in the order given (the queue's), until the limit is reached.
# Returns the claimed ids and their scores, alternating.
CLAIM_JOBS_SCRIPT = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local claimed = {}
for i = 2, #KEYS do
    if #claimed >= 2 * limit then
        break
    end
    if redis.call('EXISTS', KEYS[i]) == 0 then
        local id = ARGV[i + 2]
        local score = redis.call('ZSCORE', KEYS[1], id)
        if score and tonumber(score) <= now then
            redis.call('SET', KEYS[i], '1', 'PX', ARGV[2])
            claimed[#claimed + 1] = id
            claimed[#claimed + 1] = score
        end
    end
end
return claimed
"""


class JobClaims:
    """The claim script registered on one Redis client (sent by SHA; redis-py resends it after a NOSCRIPT)."""

    def __init__(self, redis: ArqRedis, queue_name: str) -> None:
        self._script: AsyncScript = redis.register_script(CLAIM_JOBS_SCRIPT)
        self._queue_name = queue_name

    async def claim(self, job_ids: Sequence[str], *, limit: int, lease_ms: int, now_ms: int) -> list[tuple[str, int]]:
        """Claim up to limit of job_ids (in their order); returns (job id, score) of each job now ours."""
        if not job_ids or limit <= 0:
            return []
        keys = [self._queue_name, *(in_progress_key_prefix + job_id for job_id in job_ids)]
        reply = await self._script(keys=keys, args=[now_ms, lease_ms, limit, *job_ids])
        pairs = iter(reply)
        return [(_text(job_id), int(float(_text(score)))) for job_id, score in zip(pairs, pairs, strict=True)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
