"""Real processes for fault tests: a throwaway redis-server on a unix socket, `ottrecon worker` as a child."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

from arq import ArqRedis
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from tests.conftest import MERCHANT, NEW_KEY, OLD_KEY

REDIS_SERVER = shutil.which("redis-server") or "redis-server"


class RedisServer:
    """A redis-server of the test's own (never the shared one), on a unix socket, so no TCP port can clash.

    kill() is a SIGKILL; start() again reloads whatever its persistence kept in the same directory.
    """

    def __init__(self, directory: Path, *config: str) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def spawn(self) -> None:
        command = [REDIS_SERVER, "--port", "0", "--unixsocket", str(self.socket), "--dir", str(self.directory)]
        self.process = subprocess.Popen(
            [*command, "--save", "", "--appendonly", "no", *self.config],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        self.spawn()
        client = ArqRedis(ConnectionPool.from_url(self.url))
        try:
            for _ in range(200):
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        return
                await asyncio.sleep(0.025)
        finally:
            await client.aclose(close_connection_pool=True)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@contextlib.asynccontextmanager
async def redis_server(directory: Path, *config: str) -> AsyncIterator[RedisServer]:
    server = RedisServer(directory, *config)
    await server.start()
    try:
        yield server
    finally:
        server.kill()


def worker_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTTRECON_", "OTTPAY_"))}
    return (
        env
        | {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY},{MERCHANT}={NEW_KEY}",
            "WORKER_METRICS_PORT": "0",
            "LOG_LEVEL": "INFO",
        }
        | extra
    )


@contextlib.contextmanager
def worker_process(env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`ottrecon worker` as a child process (SIGKILLed at the end if still running)."""
    with ottrecon_process("worker", env, log) as process:
        yield process


@contextlib.contextmanager
def ottrecon_process(command: str, env: Mapping[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`ottrecon <command>` (web, worker) as a child process (SIGKILLed at the end if still running)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ottrecon.cli", command], env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
