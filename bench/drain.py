"""One worker drain: fill the queue as the receiver would, start a worker, time it until every job is done."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.children import REPO_ROOT, Child, ottrecon_command
from bench.errors import BenchError
from bench.redisdb import ClaimedRedisDb
from ottrecon.queue import DEAD_LETTER_KEY, QUEUE_NAME, connect
from webhook.batcher import EnqueueBatcher
from webhook.queue import prepare

NOOP = "arq no-op"
REAL = "ottrecon worker"
# The same worker from another checkout (--baseline-code), to measure old against new in one run.
BASELINE = "baseline worker"
_POLL_S = 0.02


@dataclass(frozen=True)
class Drain:
    """One worker process emptying a pre-filled queue."""

    kind: str  # NOOP, REAL or BASELINE
    jobs: int
    wall_s: float  # process start until the last job is done (rows in Postgres, or off the queue)
    first_s: float  # process start until the first poll that saw a job done
    first_count: int
    cpu_s: float  # the worker process's CPU time over wall_s
    checks: list[str] = field(default_factory=list)  # problems found afterwards; empty when all is well

    @property
    def rate(self) -> float:
        """Jobs per second, end to end (start-up included)."""
        return self.jobs / self.wall_s

    @property
    def steady_rate(self) -> float:
        """Jobs per second once the first job was done (start-up excluded)."""
        span = self.wall_s - self.first_s
        return (self.jobs - self.first_count) / span if span > 0 else float("nan")


def measure_drain(
    kind: str,
    timeout_s: float,
    callbacks: list[dict[str, str]],
    redis_db: ClaimedRedisDb,
    workdir: Path,
    env: dict[str, str],
    code_dir: Path = REPO_ROOT,
) -> Drain:
    """Flush and refill redis_db's queue, run one worker of kind (NOOP, REAL or BASELINE) until it is empty; stops it.

    code_dir: the checkout whose code the worker runs (BASELINE: the old code, with the checkout's own .venv when it
    has one, so a change of dependencies is measured too; else with this interpreter).
    """
    redis_db.flush()
    asyncio.run(_fill(redis_db.url, callbacks))
    argv = [sys.executable, "-m", "bench.arq_noop"] if kind == NOOP else ottrecon_command("worker")
    own_python = code_dir / ".venv" / "bin" / "python"
    if kind == BASELINE and own_python.exists():
        argv[0] = str(own_python)
    log_path = workdir / f"{kind.replace(' ', '-')}-{time.monotonic_ns()}.log"
    database_url = env["DATABASE_URL"] if kind != NOOP else None
    with Child(kind, argv, log_path, env, cwd=code_dir) as child:
        return asyncio.run(_watch(kind, child, len(callbacks), redis_db.url, database_url, timeout_s))


async def _watch(
    kind: str, child: Child, total: int, redis_url: str, database_url: str | None, timeout_s: float
) -> Drain:
    """Poll until every job is done: a row in callbacks for the real worker, off the queue for the no-op."""
    redis = connect(redis_url, 5.0)
    conn = await asyncpg.connect(database_url) if database_url is not None else None
    try:

        async def queued() -> int:
            # Ingest jobs only: the worker schedules its cron jobs (reconcile, legacy-queue adoption…) ahead of
            # time in the same queue, as bench.scaleout also allows.
            jobs: list[bytes] = await redis.zrange(QUEUE_NAME, 0, -1)
            return len([job for job in jobs if not job.startswith(b"cron:")])

        async def done_count() -> int:
            if conn is None:
                return total - await queued()
            # Polled every 20 ms while the worker runs on the same cores: count(*) reads every row (at 60,000 rows
            # that took about a tenth of a core from the worker being measured), max(id) is one index probe. The
            # clone's ids run 1..total (no duplicates, no rollbacks), and only committed rows are visible, so until
            # max(id) reaches total it is the progress (within the rows of a statement in flight); from there
            # count(*) confirms every row is committed (and carries on should ids have gaps).
            top = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM callbacks"))
            if top < total:
                return top
            return int(await conn.fetchval("SELECT count(*) FROM callbacks"))

        first_s, first_count = 0.0, 0
        while True:
            count = await done_count()
            elapsed = time.perf_counter() - child.started_at
            if count and not first_count:
                first_s, first_count = elapsed, count
            if count >= total:
                wall_s = elapsed
                break
            child.check_alive()
            if elapsed > timeout_s:
                raise BenchError(f"{kind}: only {count} of {total} done after {timeout_s:.0f}s:\n{child.log_tail()}")
            await asyncio.sleep(_POLL_S)
        cpu_s = child.cpu_seconds()
        checks = []
        # A job leaves the queue just after its commit; give the last ones a moment.
        for _ in range(250):
            if await queued() == 0:
                break
            await asyncio.sleep(_POLL_S)
        else:
            checks.append(f"{await queued()} jobs still queued")
        if conn is not None:
            checks += await _database_checks(conn, total)
            dead = int(await redis.llen(DEAD_LETTER_KEY))  # type: ignore[misc]  # redis-py types sync|async
            if dead:
                checks.append(f"{dead} dead-lettered")
        return Drain(kind, total, wall_s, first_s, first_count, cpu_s, checks)
    finally:
        if conn is not None:
            await conn.close()
        await redis.aclose(close_connection_pool=True)


async def _database_checks(conn: asyncpg.Connection, total: int) -> list[str]:
    problems = []
    callbacks = await conn.fetchval("SELECT count(*) FROM callbacks")
    payments = await conn.fetchval("SELECT count(*) FROM payments WHERE status = 'paid'")
    rejected = await conn.fetchval("SELECT count(*) FROM rejected_callbacks")
    if callbacks != total:
        problems.append(f"{callbacks} callbacks recorded, expected {total}")
    if payments != total:
        problems.append(f"{payments} paid payments, expected {total}")
    if rejected:
        problems.append(f"{rejected} callbacks rejected")
    return problems


async def _fill(redis_url: str, callbacks: list[dict[str, str]]) -> None:
    """Queue every callback exactly as the receiver does: 64 concurrent senders through the same
    EnqueueBatcher, so jobs carry as many callbacks as the receiver would group under that load."""
    redis = connect(redis_url, 5.0)
    batcher = EnqueueBatcher(redis, 5.0)
    limit = asyncio.Semaphore(64)

    async def one(envelope: dict[str, str]) -> bool:
        async with limit:
            return await batcher.enqueue(prepare(envelope, datetime.now(UTC)))

    try:
        fresh = await asyncio.gather(*(one(envelope) for envelope in callbacks))
        jobs = int(await redis.zcard(QUEUE_NAME))
    finally:
        await redis.aclose(close_connection_pool=True)
    if sum(fresh) != len(callbacks):
        raise BenchError(f"queued {sum(fresh)} of {len(callbacks)} distinct callbacks")
    print(f"  queued {len(callbacks)} callbacks as {jobs} jobs ({len(callbacks) / jobs:.1f} per job)", file=sys.stderr)
