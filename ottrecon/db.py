"""Postgres plumbing for every process: pools, the errors worth a retry, and their translation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ottrecon.errors import DatabaseUnavailable

# What a query runs on: a connection of its own, or one acquired from a pool (asyncpg wraps those in a proxy).
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# Errors after which the same work can succeed later (the api maps the same ones to 503): the server or network is away,
# restarting, overloaded, read-only during a failover, or the transaction lost a race it can win next time.
TRANSIENT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # Client/protocol-level: a pooled connection the server terminated (a restart) can surface as
    # "cannot switch to state …; another operation is in progress" instead of a closed connection.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.InsufficientResourcesError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.QueryCanceledError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.LockNotAvailableError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Re-raise connection-level failures as DatabaseUnavailable; let real bugs through."""
    try:
        yield
    except TRANSIENT_ERRORS as exc:
        raise DatabaseUnavailable(f"Postgres unavailable: {exc.__class__.__name__}") from exc


async def create_pool(
    dsn: str,
    max_size: int,
    *,
    min_size: int = 0,
    command_timeout_s: float = 30,
    connect_timeout_s: float = 10,
    max_inactive_s: float = 60,
) -> asyncpg.Pool:
    """A pool that connects lazily (min_size 0): a process starts even while Postgres is down, and retries later.

    The defaults are the worker's; the api and the console's offloaded jobs pass their own timeouts.
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout_s,
        timeout=connect_timeout_s,
        max_inactive_connection_lifetime=max_inactive_s,
    )
    return pool


async def fetch_one(conn: Connection, query: str, *args: object) -> asyncpg.Record:
    """The first row of a query whose row must exist (a key just inserted or locked); LookupError if there is none,
    which is a bug, not bad input."""
    row = await conn.fetchrow(query, *args)
    if row is None:
        raise LookupError(f"expected a row from: {' '.join(query.split())[:80]}")
    return row
