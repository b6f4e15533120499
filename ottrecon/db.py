"""Postgres plumbing for every process: pools, the errors worth a retry, and their translation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from ottrecon.errors import DatabaseUnavailable

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


async def create_pool(dsn: str, max_size: int) -> asyncpg.Pool:
    """A lazily connecting pool: the worker starts even while Postgres is down and retries later."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn, min_size=0, max_size=max_size, command_timeout=30, timeout=10, max_inactive_connection_lifetime=60
    )
    return pool
