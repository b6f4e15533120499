"""Scale-out: two receivers and two workers, as real processes, on one Redis and one Postgres.

Every callback a receiver acknowledged is recorded exactly once, also when OTT Pay redelivers it
to the other receiver; the scheduled jobs that every worker runs (reconcile, alert delivery) share
their work, so each orphan payment gets one alert, delivered once. The loaded version is
`python -m bench.scaleout` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from redis.asyncio import Redis

from ottrecon.queue import QUEUE_NAME
from tests.integration.processes import ottrecon_process, redis_server, worker_env
from tests.integration.support import make_callback

ORDERS = 300
ORDER_ID = re.compile(r"SO-\d{4}")


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def alert_sink() -> AsyncIterator[tuple[str, list[str]]]:
    """A Slack-style webhook on loopback that keeps every message it is sent."""
    texts: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        texts.append((await request.json())["text"])
        # A slow endpoint keeps a delivery in flight across both workers' ticks (they fire on the
        # same second marks): only the claim's row locks keep the other worker off these alerts.
        await asyncio.sleep(0.5)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", texts
    finally:
        await runner.cleanup()


async def wait_ready(session: aiohttp.ClientSession, url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url + "/readyz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


async def send_until_acked(session: aiohttp.ClientSession, url: str, body: dict[str, str]) -> bool:
    """POST as OTT Pay does: again, after a pause, until the answer is 200 (bounded here)."""
    for _ in range(20):
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.post(url + "/ottpay/callback", json=body) as response:
                if response.status == 200:
                    return True
        await asyncio.sleep(0.2)
    return False


@pytest.mark.timeout(150)
async def test_two_receivers_and_two_workers_record_each_acked_callback_once_and_share_scheduled_work(
    database_url: str, tmp_path: Path
) -> None:
    async with redis_server(tmp_path) as server, alert_sink() as (sink_url, texts):
        env = worker_env(
            database_url,
            server.url,
            OTTRECON_ALERT_WEBHOOK_URL=sink_url,
            OTTRECON_ALERT_STORM_THRESHOLD="100000",  # one message per alert, so each can be counted
            OTTRECON_CRON_EVERY_SECONDS="1",
            WEB_METRICS_PORT="0",
            HOST="127.0.0.1",
        )
        ports = [_port(), _port()]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        with contextlib.ExitStack() as processes:
            for index, port in enumerate(ports):
                processes.enter_context(
                    ottrecon_process("web", env | {"PORT": str(port)}, tmp_path / f"web-{index}.log")
                )
            workers = [
                processes.enter_context(ottrecon_process("worker", env, tmp_path / f"worker-{index}.log"))
                for index in range(2)
            ]
            timeout = aiohttp.ClientTimeout(total=5)
            async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=64)) as session:
                deadline = time.monotonic() + 30
                await asyncio.gather(*(wait_ready(session, url, deadline) for url in urls))
                # Each order to one receiver; every third also, at the same moment, to the other one.
                sends = []
                for n in range(ORDERS):
                    body = make_callback(f"SO-{n:04d}")
                    sends.append(send_until_acked(session, urls[n % 2], body))
                    if n % 3 == 0:
                        sends.append(send_until_acked(session, urls[(n + 1) % 2], body))
                acked = await asyncio.gather(*sends)
            assert all(acked)

            conn = await asyncpg.connect(database_url)
            try:
                deadline = time.monotonic() + 90
                while True:
                    recorded = await conn.fetchval("SELECT count(*) FROM callbacks")
                    notified = await conn.fetchval("SELECT count(*) FROM alerts WHERE notified_at IS NOT NULL")
                    if (recorded, notified) == (ORDERS, ORDERS) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.25)
                await asyncio.sleep(2)  # two more cron ticks: a second delivery would show now
                per_order = await conn.fetch("SELECT order_id, count(*) AS n FROM callbacks GROUP BY order_id")
                alerts = await conn.fetch("SELECT kind, order_id, notified_at FROM alerts")
            finally:
                await conn.close()
            assert [w.poll() for w in workers] == [None, None], "a worker exited"

        queue = Redis.from_url(server.url)
        try:
            waiting = [job for job in await queue.zrange(QUEUE_NAME, 0, -1) if not job.startswith(b"cron:")]
        finally:
            await queue.aclose()

    assert sorted(row["order_id"] for row in per_order) == [f"SO-{n:04d}" for n in range(ORDERS)]
    assert {row["n"] for row in per_order} == {1}
    assert waiting == []
    assert len(alerts) == ORDERS and {a["kind"] for a in alerts} == {"orphan_payment"}
    assert all(a["notified_at"] is not None for a in alerts)
    sent = Counter(match for text in texts for match in ORDER_ID.findall(text))
    assert sorted(sent) == [f"SO-{n:04d}" for n in range(ORDERS)]
    assert set(sent.values()) == {1}, {order: n for order, n in sent.items() if n > 1}
