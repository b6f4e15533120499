"""arq's Worker, made to heal by itself: it rides out Redis outages, leases the jobs it runs, drains on SIGTERM.

- **Redis outages of any length.** arq lets a Redis error escape its polling loop, which ends
  the process (rc=1). Here every poll, start-up step and shutdown step that talks to Redis is
  guarded: the worker logs the outage once, shows it in `ottrecon_redis_up`, retries with
  capped exponential backoff and resumes where it was.
- **Orphaned jobs back in seconds.** arq marks a running job with an in-progress key that
  lives as long as the longest timeout of any function plus 10 s (250 s here, because of the
  cron jobs): a worker killed mid-job left its jobs stuck that long. Here the key is a lease of
  `job_lease_s` that the worker renews every third of it while the job runs, so a job of any
  length keeps its lease, and a killed worker's jobs are taken by another within a lease.
- **Graceful stop.** SIGTERM stops taking jobs and lets running ones finish (arq's
  `job_completion_wait`), so an in-flight batch is recorded and acknowledged before exit.

See docs/decisions/0019-worker-heals-by-itself.md.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

from arq import Worker
from arq.constants import in_progress_key_prefix
from arq.utils import poll, timestamp_ms
from redis.exceptions import RedisError

from worker import metrics
from worker.claims import JobClaims

logger = logging.getLogger("ottrecon.worker")

# What a Redis that is away, restarting, loading its AOF or too slow raises through redis-py.
REDIS_DOWN_ERRORS = (RedisError, OSError, TimeoutError)
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 2.0
# While Redis stays away, say so again this often (the first failure is logged at once).
STILL_DOWN_EVERY_S = 60.0


class ResilientWorker(Worker):
    """An arq Worker that never exits because Redis went away, and whose running jobs hold renewed leases."""

    def __init__(self, *args: Any, job_lease_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # arq sets the in-progress key once, for max(timeout) + 10 s; it becomes a renewed lease instead.
        self.in_progress_timeout_s = job_lease_s
        self.job_lease_s = job_lease_s
        self.redis_outages = 0
        self._down_since: float | None = None
        self._last_down_log = 0.0
        self._backoff_s = BACKOFF_FIRST_S
        self._job_claims: JobClaims | None = None

    async def main(self) -> None:
        """arq's main loop (arq.worker.Worker.main), with every Redis step guarded."""
        while not await self._guarded(self._say_hello):
            pass
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        renewer = asyncio.create_task(self._renew_leases())
        try:
            async for _ in poll(self.poll_delay_s):
                _reraise_cancellation()
                if not await self._guarded(self._poll_iteration):
                    continue
                if self.burst and await self._burst_finished():
                    return
        finally:
            renewer.cancel()

    async def _say_hello(self) -> None:
        info = await self.pool.info(section="server")
        logger.info(
            "worker connected to redis",
            extra={"redis_version": info.get("redis_version"), "functions": len(self.functions)},
        )

    async def _burst_finished(self) -> bool:
        # arq's burst exit: the queue is empty (or enough jobs ran), then wait for the running ones.
        if 0 <= self.max_burst_jobs <= self._jobs_started():
            await self._wait_for_running_jobs()
            return True
        queued = await self._guarded(lambda: self.pool.zcard(self.queue_name), default=-1)
        if queued == 0:
            await self._wait_for_running_jobs()
            return True
        return False

    async def _wait_for_running_jobs(self) -> None:
        """Let every running job end. A job whose last step (arq's finish_job) met a Redis outage ends
        with that error: it is not lost (its lease lapses and it runs again, idempotently), so it is
        logged, never raised out of the worker's loop."""
        outcomes = await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, REDIS_DOWN_ERRORS):
                logger.warning(
                    "a job could not report its end to redis; it runs again once its lease lapses",
                    extra={"error": outcome.__class__.__name__},
                )
            elif isinstance(outcome, BaseException):
                raise outcome

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs, with every claim of a poll made in one Redis script call (worker/claims.py).

        Takes as many of job_ids (the due ones, in queue order) as there are free slots, skipping
        those another worker runs. arq counts a job slot before it claims the job in Redis and
        releases it only on its own errors: a connection error there would leak the slot, and after
        enough outages the worker would stop taking jobs at all. Here every slot not filled by a
        started job is given back, whatever happened.
        """
        free = self.max_jobs - self.job_counter
        if not self.allow_pick_jobs or free <= 0 or not job_ids:
            return
        for _ in range(free):
            await self.sem.acquire()  # never waits: the semaphore holds max_jobs + 1 and job_counter tracks it
        self.job_counter += free
        started = 0
        try:
            claimed = await self._claims.claim(
                [job_id.decode() for job_id in job_ids],
                limit=free,
                lease_ms=int(self.in_progress_timeout_s * 1000),
                now_ms=timestamp_ms(),
            )
            for job_id, score in claimed:
                task = self.loop.create_task(self.run_job(job_id, score))
                task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
                self.tasks[job_id] = task
                started += 1
        finally:
            for _ in range(free - started):
                self.job_counter -= 1
                self.sem.release()

    @property
    def _claims(self) -> JobClaims:
        # Built on first use: arq connects its Redis pool in main(), after __init__.
        if self._job_claims is None:
            self._job_claims = JobClaims(self.pool, self.queue_name)
        return self._job_claims

    async def _renew_leases(self) -> None:
        """Extend the in-progress key of every job running here, every third of a lease."""
        lease_ms = int(self.job_lease_s * 1000)
        while True:
            await asyncio.sleep(self.job_lease_s / 3)
            running = list(self.job_tasks)
            if not running:
                continue
            try:
                async with self.pool.pipeline(transaction=False) as pipe:
                    for job_id in running:
                        pipe.pexpire(in_progress_key_prefix + job_id, lease_ms)
                    await pipe.execute()
            except REDIS_DOWN_ERRORS as exc:
                _reraise_cancellation()
                # The poll loop reports the outage; a lease that lapses meanwhile only lets another
                # worker run the (idempotent) job too.
                logger.debug("could not renew job leases", extra={"error": exc.__class__.__name__})

    async def close(self) -> None:
        """arq's close, tolerating a Redis that is away at shutdown (the process must still exit 0)."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        try:
            await asyncio.wait_for(self.pool.delete(self.health_check_key), timeout=2)
        except REDIS_DOWN_ERRORS:
            pass  # the health key expires on its own
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.aclose(close_connection_pool=True)
        self._pool = None

    async def _guarded(self, step: Any, default: Any = None) -> Any:
        """Run one Redis-using step; on a Redis failure note the outage, back off, and return default."""
        try:
            result = await step()
        except REDIS_DOWN_ERRORS as exc:
            _reraise_cancellation()
            await self._redis_failed(exc)
            return default
        self._redis_ok()
        return True if result is None else result

    async def _redis_failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._last_down_log = now
            self.redis_outages += 1
            metrics.REDIS_OUTAGES.inc()
            metrics.REDIS_UP.set(0)
            logger.error(
                "redis unavailable; the worker keeps retrying and resumes when it answers",
                extra={"error": exc.__class__.__name__, "detail": str(exc)[:200]},
            )
        elif now - self._last_down_log >= STILL_DOWN_EVERY_S:
            self._last_down_log = now
            logger.error("redis still unavailable", extra={"down_for_s": round(now - self._down_since, 1)})
        await asyncio.sleep(self._backoff_s)
        self._backoff_s = min(BACKOFF_MAX_S, self._backoff_s * 2)

    def _redis_ok(self) -> None:
        self._backoff_s = BACKOFF_FIRST_S
        metrics.REDIS_UP.set(1)
        if self._down_since is not None:
            down_for = time.monotonic() - self._down_since
            self._down_since = None
            logger.warning("redis is back; the worker resumed", extra={"down_for_s": round(down_for, 2)})


def _reraise_cancellation() -> None:
    """redis-py can turn a cancellation that lands mid-command into a connection error: a task being
    cancelled (a stop) must stop, not mistake it for an outage and carry on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
