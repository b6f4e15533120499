"""Scheduled jobs run one tick at a time in each worker: a tick that outlasts its interval is not joined by the next."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from prometheus_client import Counter

logger = logging.getLogger("ottrecon.worker")

P = ParamSpec("P")
R = TypeVar("R")

TICKS_SKIPPED = Counter(
    "ottrecon_scheduled_ticks_skipped_total",
    "Scheduled ticks this worker skipped because its previous tick of the same job was still running.",
    ["job"],
)


def one_tick_at_a_time(
    job: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R | None]]:
    """Wrap a scheduled job so that, in this worker, a tick due while the last still runs returns None at once.

    arq enqueues a cron job every scheduled second under a job id of its own, so without this a slow tick
    is joined by the next, and the next: reconcile ticks piled up until they held the whole Postgres pool
    and callbacks waited (decision 0044). Nothing is lost by skipping: scheduled work is queued in Postgres
    and the running tick, or the first one due after it, takes it. Other workers are not affected (their
    ticks share the work through SKIP LOCKED). Wrap once per worker: the flag lives in the closure.
    """
    running = False
    skipped = TICKS_SKIPPED.labels(job=job.__name__)

    @functools.wraps(job)
    async def run(ctx: Any, /, *args: P.args, **kwargs: P.kwargs) -> R | None:
        nonlocal running
        if running:
            skipped.inc()
            logger.debug("scheduled tick skipped: the last one still runs", extra={"job": job.__name__})
            return None
        running = True
        try:
            return await job(ctx, *args, **kwargs)
        finally:
            running = False

    return run
