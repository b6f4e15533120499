"""The bulk claim script (worker/claims.py) against a reference model of arq's one-job-at-a-time start_jobs:
the same jobs are claimed, in queue order, up to the free slots, and each claimed job holds a lease."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from arq import ArqRedis
from arq.constants import in_progress_key_prefix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import ConnectionPool

from worker.claims import JobClaims

NOW_MS = 1_800_000_000_000
LEASE_MS = 15_000


@dataclass(frozen=True)
class Job:
    """A job id as the poll saw it, and what became of it since: queued (due or deferred) or not, run elsewhere."""

    queued: bool
    due: bool
    running_elsewhere: bool


JOBS = st.lists(st.builds(Job, st.booleans(), st.booleans(), st.booleans()), max_size=12)


def reference_claims(jobs: list[Job], limit: int) -> list[int]:
    """arq's start_jobs: for each id in order while slots last, skip it if its in-progress key exists,
    it is no longer queued or not yet due; otherwise claim it."""
    claimed: list[int] = []
    for index, job in enumerate(jobs):
        if len(claimed) >= limit:
            break
        if not job.running_elsewhere and job.queued and job.due:
            claimed.append(index)
    return claimed


async def _claim_and_check(redis_url: str, jobs: list[Job], limit: int) -> None:
    redis = ArqRedis(ConnectionPool.from_url(redis_url))
    tag = uuid.uuid4().hex
    queue = f"test-claims:{tag}"
    ids = [f"{tag}-{index}" for index in range(len(jobs))]
    try:
        for job_id, job in zip(ids, jobs, strict=True):
            if job.queued:
                await redis.zadd(queue, {job_id: NOW_MS - 5 if job.due else NOW_MS + 60_000})
            if job.running_elsewhere:
                await redis.set(in_progress_key_prefix + job_id, b"1", px=LEASE_MS * 10)

        claimed = await JobClaims(redis, queue).claim(ids, limit=limit, lease_ms=LEASE_MS, now_ms=NOW_MS)

        expected = reference_claims(jobs, limit)
        assert claimed == [(ids[i], NOW_MS - 5) for i in expected]
        for index, job_id in enumerate(ids):
            ttl = await redis.pttl(in_progress_key_prefix + job_id)
            if index in expected:
                assert 0 < ttl <= LEASE_MS  # ours now, for one lease
            elif jobs[index].running_elsewhere:
                assert ttl > LEASE_MS  # the other worker's lease, untouched
            else:
                assert ttl == -2  # never claimed: no key
        assert await redis.zcard(queue) == sum(job.queued for job in jobs)  # claiming leaves the queue as it was
    finally:
        await redis.delete(queue, *(in_progress_key_prefix + job_id for job_id in ids))
        await redis.aclose(close_connection_pool=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=JOBS, limit=st.integers(min_value=1, max_value=14))
def test_claims_match_arqs_one_by_one_start_jobs(session_redis_url: str, jobs: list[Job], limit: int) -> None:
    asyncio.run(_claim_and_check(session_redis_url, jobs, limit))


async def test_a_second_worker_takes_the_jobs_after_those_the_first_runs(redis_url: str) -> None:
    # Scale-out: the first worker's running jobs head the queue; the second claims past them.
    redis = ArqRedis(ConnectionPool.from_url(redis_url))
    try:
        await redis.zadd("q", {f"j{i}": NOW_MS - 100 + i for i in range(6)})
        ids = [f"j{i}" for i in range(6)]
        first = await JobClaims(redis, "q").claim(ids, limit=3, lease_ms=LEASE_MS, now_ms=NOW_MS)
        second = await JobClaims(redis, "q").claim(ids, limit=5, lease_ms=LEASE_MS, now_ms=NOW_MS)
        assert [job_id for job_id, _ in first] == ["j0", "j1", "j2"]
        assert [job_id for job_id, _ in second] == ["j3", "j4", "j5"]
        assert await JobClaims(redis, "q").claim(ids, limit=5, lease_ms=LEASE_MS, now_ms=NOW_MS) == []
    finally:
        await redis.aclose(close_connection_pool=True)
