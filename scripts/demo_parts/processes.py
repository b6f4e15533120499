"""The service's four processes (sim, web, worker, api): start each until it answers, stop all in the end."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from redis.asyncio import Redis

from ottrecon.queue import QUEUE_NAME

from .environment import LOOPBACK, ROOT, ottrecon_command
from .errors import DemoError

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Child:
    """One `ottrecon` subprocess and the file its output goes to."""

    name: str
    process: asyncio.subprocess.Process
    log: Path


@dataclass(frozen=True)
class Stack:
    """Where the running service is, and the secrets the demo shares with it."""

    api_url: str
    sim_url: str
    token: str
    database_url: str


async def start_child(name: str, command: str, env: Mapping[str, str], log_dir: Path) -> Child:
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        # A session of its own: Ctrl-C reaches only the demo, which then stops every child in order.
        process = await asyncio.create_subprocess_exec(
            command,
            name,
            env=dict(env),
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, process, log)


async def stop_child(child: Child) -> None:
    """SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
    if child.process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        child.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(child.process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            child.process.kill()
        await child.process.wait()


async def wait_ready(child: Child, probe: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not await probe():
        if child.process.returncode is not None:
            raise DemoError(f"{child.name} exited with code {child.process.returncode}:\n{tail(child.log)}")
        if time.monotonic() > deadline:
            raise DemoError(f"{child.name} not ready after {READY_TIMEOUT_S:.0f}s:\n{tail(child.log)}")
        await asyncio.sleep(0.1)


def http_probe(session: aiohttp.ClientSession, url: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        try:
            async with session.get(url) as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError):
            return False

    return probe


def tcp_probe(url: str) -> Callable[[], Awaitable[bool]]:
    parts = urlsplit(url)

    async def probe() -> bool:
        try:
            _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    return probe


def worker_probe(redis: Redis) -> Callable[[], Awaitable[bool]]:
    # arq writes its health-check key on its first poll, after on_startup succeeded.
    async def probe() -> bool:
        return bool(await redis.exists(f"{QUEUE_NAME}:health-check"))

    return probe


def tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join(f"  {line}" for line in text[-lines:]) or "  (empty log)"


def error_lines(children: Sequence[Child]) -> list[str]:
    """Log lines of level error/critical and tracebacks: worth a look even when the demo passes."""
    found = []
    for child in children:
        with contextlib.suppress(OSError):
            for line in child.log.read_text(errors="replace").splitlines():
                if any(mark in line for mark in ('"level": "error"', '"level": "critical"', "Traceback")):
                    found.append(f"{child.name}: {line[:300]}")
    return found


@contextlib.asynccontextmanager
async def running_service(
    envs: Mapping[str, Mapping[str, str]], redis: Redis, log_dir: Path, children: list[Child]
) -> AsyncIterator[Stack]:
    """Start sim, web, worker and api, wait until each answers; stop all of them on the way out."""
    command = ottrecon_command()
    sim_url = f"http://{LOOPBACK}:{envs['sim']['SIM_PORT']}"
    web_url = f"http://{LOOPBACK}:{envs['web']['PORT']}"
    api_url = f"http://{LOOPBACK}:{envs['api']['API_PORT']}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            probes = {
                "sim": tcp_probe(sim_url),
                "web": http_probe(session, f"{web_url}/healthz"),
                "worker": worker_probe(redis),
                "api": http_probe(session, f"{api_url}/healthz"),
            }
            for name, probe in probes.items():
                children.append(await start_child(name, command, envs[name], log_dir))
                await wait_ready(children[-1], probe)
        print(f"· started sim {sim_url}, web {web_url}, worker, api {api_url} (logs in {log_dir})")
        token = envs["api"]["OTTRECON_API_TOKENS"].partition(":")[2]
        yield Stack(api_url, sim_url, token, envs["worker"]["DATABASE_URL"])
    finally:
        await asyncio.shield(asyncio.gather(*(stop_child(child) for child in children)))
