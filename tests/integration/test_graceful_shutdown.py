"""SIGTERM on the receiver and the api, as systemd sends it: in-flight requests finish, then the process exits 0.

Each process runs as an operator runs it (`ottrecon web`, `ottrecon api` in a subprocess). The receiver
talks to Redis through a HoldingProxy, so a callback is provably in flight when the signal arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from arq import ArqRedis

from tests.conftest import MERCHANT, with_redis_db
from tests.integration.support import HoldingProxy, make_callback
from tests.simulator import free_port

OTTRECON = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "ottrecon")
API_TOKEN = "drain-test-token-0123456789abcdef"


@contextlib.asynccontextmanager
async def ottrecon(command: str, env: dict[str, str], port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """`ottrecon COMMAND` in its own process, once /healthz answers on port; killed if still running at the end."""
    base = {"PATH": os.environ.get("PATH", ""), "LOG_LEVEL": "WARNING", "WEB_METRICS_PORT": "0"}
    process = await asyncio.create_subprocess_exec(
        OTTRECON, command, env=base | env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(150):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                assert process.returncode is None, "the process exited at start"
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"ottrecon {command} did not answer on port {port}")
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def post(url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, **kwargs) as response:
        return response.status, await response.json()


async def test_receiver_answers_its_in_flight_callback_then_exits_on_sigterm(redis_url: str, redis: ArqRedis) -> None:
    parts = urlsplit(redis_url)
    async with HoldingProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        port = free_port()
        env = {
            "REDIS_URL": with_redis_db(f"redis://127.0.0.1:{proxy.port}", int(parts.path.strip("/"))),
            "PORT": str(port),
        }
        async with ottrecon("web", env, port) as process:
            proxy.hold()
            answer = asyncio.create_task(post(f"http://127.0.0.1:{port}/ottpay/callback", json=make_callback("D1")))
            await asyncio.wait_for(proxy.held.wait(), 5)  # the enqueue is on its way to Redis, not there yet

            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert process.returncode is None, "exited with a callback in flight"
            assert await refused(port), "still accepting new connections while draining"
            proxy.release()

            assert await asyncio.wait_for(answer, 5) == (200, {"rsp_code": "SUCCESS", "rsp_msg": "success"})
            assert await asyncio.wait_for(process.wait(), 10) == 0
    jobs = await redis.keys("arq:job:*")
    assert len(jobs) == 1, "the acknowledged callback is not queued"


async def test_api_finishes_a_waiting_payment_request_then_exits_on_sigterm(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OTTRECON_API_TOKENS": API_TOKEN,
        "OTTPAY_OPERATORS": f"{MERCHANT}=1234567890",
        "API_PORT": str(port),
        # No worker runs: the request waits this long for an answer that never comes, then answers `pending`.
        "OTTRECON_API_WAIT_SECONDS": "2",
    }
    async with ottrecon("api", env, port) as process:
        answer = asyncio.create_task(
            post(
                f"http://127.0.0.1:{port}/api/payments",
                json={"merchant_id": MERCHANT, "kind": "ACTIVEPAY", "biz_type": "ALIPAY", "amount": 1250},
                headers={"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": "drain-1"},
            )
        )
        for _ in range(50):  # until the order is stored, i.e. the request is being handled
            if await db.fetchval("SELECT count(*) FROM orders"):
                break
            await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert process.returncode is None, "exited with a request in flight"
        assert await refused(port)

        status, body = await asyncio.wait_for(answer, 10)
        assert status == 201
        assert body["status"] == "pending"
        assert await asyncio.wait_for(process.wait(), 10) == 0
