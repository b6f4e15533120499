"""Groups callbacks arriving at the same moment into one Redis round trip and one queued job."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from arq import ArqRedis

from webhook import metrics
from webhook.errors import QueueUnavailable
from webhook.queue import PreparedCallback, enqueue_callbacks


class EnqueueBatcher:
    """Like group commit: while one batch is being written to Redis, new callbacks queue up and
    go out together in the next write. An idle receiver writes a lone callback at once; under
    load one round trip carries many (docs/decisions/0013-receiver-batches-enqueues.md).

    Every caller learns the outcome of the write that carried its callback, so a 200 still
    means "Redis confirmed it".
    """

    def __init__(self, redis: ArqRedis, timeout_s: float, max_batch: int = 200) -> None:
        # Made inside the loop that serves requests (the app's cleanup context), which is kept: on Python 3.11
        # asyncio.get_running_loop() makes a getpid() system call, needless once per request.
        self._loop = asyncio.get_running_loop()
        self._redis = redis
        self._timeout_s = timeout_s
        self._max_batch = max_batch
        self._waiting: deque[tuple[PreparedCallback, asyncio.Future[bool]]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def enqueue(self, callback: PreparedCallback) -> bool:
        """Queue one prepared callback; True if newly queued, False if an identical one already is.

        Raises QueueUnavailable if Redis did not confirm the write in time. Takes only prepared
        callbacks (webhook.queue.prepare, run in the request's handler): the shared write does
        no per-body work, so one body can never fail the others grouped with it.
        """
        done: asyncio.Future[bool] = self._loop.create_future()
        self._waiting.append((callback, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = self._loop.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        while self._waiting:
            batch = [self._waiting.popleft() for _ in range(min(self._max_batch, len(self._waiting)))]
            # Timed per write, not per callback: one observation per round trip keeps the hot path
            # free of per-request histogram work, and a write is what Redis's latency applies to.
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self._timeout_s):
                    fresh = await enqueue_callbacks(self._redis, [callback for callback, _ in batch])
            except Exception as exc:
                # A timed-out write may still have landed: the sender retries, and the queued-key
                # then makes its redelivery join the job instead of doubling it. Any other error
                # (a bug: bodies arrive prepared, so none is theirs) must not leave requests
                # hanging either: they get a 503 and OTT Pay retries.
                failure = (
                    exc
                    if isinstance(exc, QueueUnavailable)
                    else QueueUnavailable(f"enqueue failed: {exc.__class__.__name__}")
                )
                for _, done in batch:
                    if not done.done():
                        done.set_exception(failure)
                metrics.ENQUEUE_SECONDS.observe(time.perf_counter() - started)
            else:
                metrics.ENQUEUE_SECONDS.observe(time.perf_counter() - started)
                metrics.ENQUEUE_BATCH.observe(len(batch))
                queued = sum(fresh)
                metrics.ENQUEUED["queued"].inc(queued)
                metrics.ENQUEUED["already_queued"].inc(len(fresh) - queued)
                for (_, done), flag in zip(batch, fresh, strict=True):
                    if not done.done():
                        done.set_result(flag)
