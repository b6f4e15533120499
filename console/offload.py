"""Run heavy database work on its own event loop in a thread, with a private one-connection pool.

Statement parsing and CSV writing are synchronous between their awaits; on the api's loop they
would stall point-of-sale payments for seconds. In a thread they share the CPU instead, and they
never take connections from the api's small pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from worker.db import translate_errors

T = TypeVar("T")


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
