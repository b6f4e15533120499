"""Delayed work the simulator does after answering (callbacks, autopay, settling): tracked and cancellable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("simulator")


class Background:
    """A set of tasks that the app cancels on /sim/reset and on shutdown, so none outlives it."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def later(self, delay_s: float, job: Callable[[], Awaitable[None]], name: str) -> None:
        """Run job after delay_s seconds in the running loop. Errors are logged, never raised."""
        task = asyncio.get_running_loop().create_task(self._run(delay_s, job, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, delay_s: float, job: Callable[[], Awaitable[None]], name: str) -> None:
        try:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A failing job must not take the simulator down; it is a test tool, so say it loudly.
            logger.exception("simulator background job failed", extra={"job": name})

    async def cancel_all(self) -> None:
        """Cancel every pending job and wait until they have stopped."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)
