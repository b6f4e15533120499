"""Shared fixtures: a fresh Postgres database per test cloned from a migrated template, and Redis."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from arq import ArqRedis
from redis.asyncio import ConnectionPool

from ottpay.keys import MerchantKeys, parse_merchant_keys
from ottrecon.migrations import migrate
from ottrecon.queue import deserialize, serialize

# Keys published in PROTOCOL.md (not secrets): the current one and the one rotated in.
MERCHANT = "QC00005496"
OLD_KEY = "6698851A525C9433"
NEW_KEY = "A8B5FE540E38A5A9"
OTHER_MERCHANT = "ON00004652"
OTHER_KEY = "0123456789ABCDEF"
# Tests use Redis databases from the top down (15, 14, …), one per concurrent test session,
# flushed before each test; a session claims its database with a lock key that it keeps.
FIRST_TEST_REDIS_DB = int(os.environ.get("OTTRECON_TEST_REDIS_DB", "15"))
LOCK_KEY = "ottrecon:test-session"


def _server_url(name: str) -> str:
    url = os.environ.get(name, "")
    if not url:
        pytest.exit(f"{name} is not set: run the tests with `make test`, which finds or starts the servers", 2)
    return url


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def with_redis_db(url: str, index: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{index}"))


@pytest.fixture(scope="session")
def admin_url() -> str:
    return _server_url("DATABASE_URL")


@pytest.fixture
async def empty_database(admin_url: str) -> AsyncIterator[str]:
    """A database of its own, with nothing in it (not even the migrations), dropped afterwards."""
    name = f"ottrecon_m_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(admin_url, name)
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


@pytest.fixture(scope="session")
def template_db(admin_url: str) -> Iterator[str]:
    """A database migrated by the real runner, used as the template for every test's database."""
    name = f"ottrecon_tpl_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        await migrate(with_database(admin_url, name))

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    yield name
    asyncio.run(drop())


@pytest.fixture
async def database_url(admin_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, fully migrated database for this test only."""
    name = f"ottrecon_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    yield with_database(admin_url, name)
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to this test's database, for assertions."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
def session_redis_url() -> Iterator[str]:
    """A Redis database no other concurrently running test session uses (so their workers never
    take each other's jobs)."""
    session_id = uuid.uuid4().hex

    async def claim() -> str:
        for index in range(FIRST_TEST_REDIS_DB, 0, -1):
            url = with_redis_db(_server_url("REDIS_URL"), index)
            redis = ArqRedis(ConnectionPool.from_url(url))
            try:
                if await redis.set(LOCK_KEY, session_id, nx=True, ex=3600):
                    return url
            finally:
                await redis.aclose(close_connection_pool=True)
        pytest.exit("every Redis test database is claimed by another test session", 2)

    async def release(url: str) -> None:
        redis = ArqRedis(ConnectionPool.from_url(url))
        try:
            await redis.flushdb()
        finally:
            await redis.aclose(close_connection_pool=True)

    url = asyncio.run(claim())
    yield url
    asyncio.run(release(url))


@pytest.fixture
async def redis_url(session_redis_url: str) -> AsyncIterator[str]:
    redis = ArqRedis(ConnectionPool.from_url(session_redis_url))
    session_id = await redis.get(LOCK_KEY)
    await redis.flushdb()
    await redis.set(LOCK_KEY, session_id or b"held", ex=3600)
    await redis.aclose(close_connection_pool=True)
    yield session_redis_url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[ArqRedis]:
    client = ArqRedis(ConnectionPool.from_url(redis_url), job_serializer=serialize, job_deserializer=deserialize)
    yield client
    await client.aclose(close_connection_pool=True)


@pytest.fixture
def merchants() -> MerchantKeys:
    """MERCHANT accepts both its old and new key (mid-rotation); OTHER_MERCHANT has one key."""
    return parse_merchant_keys(f"{MERCHANT}={OLD_KEY},{MERCHANT}={NEW_KEY},{OTHER_MERCHANT}={OTHER_KEY}")
