"""Throwaway resources of one demo run: a migrated database, a Redis index, a directory for the child logs."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from ottrecon.migrations import migrate

from .environment import with_path


@dataclass
class LogDir:
    """Where the children write; keep is set when something went wrong and the logs matter."""

    path: Path
    keep: bool


@contextlib.asynccontextmanager
async def demo_database(server_url: str) -> AsyncIterator[str]:
    """A fresh, migrated database on the server of server_url, dropped afterwards whatever happens."""
    name = f"ottrecon_demo_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = with_path(server_url, f"/{name}")
            await migrate(url)
            print(f"· database {name} created and migrated")
            yield url
        finally:
            # FORCE: a child killed mid-query may leave a session behind.
            await asyncio.shield(admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await asyncio.shield(admin.close())


@contextlib.asynccontextmanager
async def demo_redis(url: str) -> AsyncIterator[Redis]:
    """A dedicated Redis database index, flushed before and after the demo."""
    redis = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        await redis.flushdb()
        yield redis
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(redis.flushdb())
        await redis.aclose()


@contextlib.contextmanager
def log_directory(keep: bool) -> Iterator[LogDir]:
    """A temporary directory for the children's logs: deleted after a clean pass, kept (and named) otherwise."""
    logs = LogDir(Path(tempfile.mkdtemp(prefix="ottrecon-demo-")), keep)
    try:
        yield logs
    except BaseException:
        logs.keep = True
        raise
    finally:
        if logs.keep and any(logs.path.iterdir()):
            print(f"child logs kept in {logs.path}", file=sys.stderr)
        else:
            shutil.rmtree(logs.path, ignore_errors=True)
