"""Run heavy database work on its own event loop in a thread, with a private one-connection pool.

Statement parsing and CSV writing are synchronous between their awaits; on the api's loop they
would stall point-of-sale payments for seconds. In a thread they share the CPU instead, and they
never take connections from the api's small pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import asyncpg
from aiohttp import web

from ottrecon.console.errors import PageError
from ottrecon.db import translate_errors

T = TypeVar("T")


class OffloadSlots:
    """How many offloaded jobs (CSV downloads, statement imports) may run at once.

    Each holds a thread of the loop's default executor (shared with password checks) and a
    Postgres connection of its own for as long as it runs, a download as long as the browser
    reads. Past the limit a request is refused at once with a 503 page: waiting would hold the
    request, and a browser reloading would pile up more.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0

    @contextmanager
    def claim(self) -> Iterator[None]:
        """Hold a slot for the block; raise the 503 PageError when none is free."""
        if self.running >= self.limit:
            raise PageError(
                503,
                "The console is busy with other downloads and imports",
                f"{self.limit} CSV downloads or statement imports are running already. "
                "Wait for them to finish, then try again (or use `ottrecon export` on a server).",
            )
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1


OFFLOAD_SLOTS = web.AppKey("console_offload_slots", OffloadSlots)


async def run_with_private_pool(
    database_url: str, job: Callable[[asyncpg.Pool], Awaitable[T]], *, done: Callable[[], None] | None = None
) -> T:
    """await job(pool) in a worker thread on a fresh loop; done() runs on that thread when it ends, even on error.

    Raises DatabaseUnavailable when Postgres cannot be reached, or whatever job raises.
    """

    def run() -> T:
        async def main() -> T:
            async with translate_errors():
                pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1, command_timeout=120)
            try:
                return await job(pool)
            finally:
                await pool.close()

        try:
            return asyncio.run(main())
        finally:
            if done is not None:
                done()

    return await asyncio.to_thread(run)
