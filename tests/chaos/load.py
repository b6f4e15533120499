"""The outside world of a chaos run: OTT Pay sending callbacks (and resending until acknowledged), and the tally.

The sender is the only fake: genuine callbacks sealed with a configured key, each with its own
order id, POSTed to the receiver over real HTTP; anything but a 200 is resent with backoff, as
OTT Pay does. The tally is read from the real Postgres and Redis afterwards: acknowledged but
not recorded is *lost*, an order recorded twice is a *duplicate*.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ottpay.envelope import build_callback
from ottrecon.queue import DEAD_LETTER_KEY, QUEUE_NAME
from tests.conftest import MERCHANT, OLD_KEY


def genuine_callback(order_id: str, amount: int = 100) -> dict[str, str]:
    data = {"amount": str(amount), "bizpay_order_id": f"AL{order_id}", "tip": "0", "merchant_id": MERCHANT}
    data |= {"order_id": order_id, "finish_time": "20261130120000"}
    return build_callback(data, MERCHANT, OLD_KEY)


@dataclass
class Sent:
    """What the sender saw: every order it sent, those acknowledged with 200, and the other answers."""

    orders: list[str] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    last_ack_at: float = 0.0


class Sender:
    """POSTs callbacks at a steady rate; resends each until it is acknowledged or give_up_s has passed."""

    def __init__(self, url: str, *, give_up_s: float = 60.0, concurrency: int = 64) -> None:
        self.url = url + "/ottpay/callback"
        self.give_up_s = give_up_s
        self.sent = Sent()
        self._limit = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send_many(self, prefix: str, count: int, rate_per_s: float) -> None:
        tasks = []
        for n in range(count):
            tasks.append(asyncio.create_task(self.send_until_acked(f"{prefix}-{n:06d}")))
            await asyncio.sleep(1 / rate_per_s)
        await asyncio.gather(*tasks)

    async def send_until_acked(self, order_id: str, body: Any = None) -> bool:
        assert self._session is not None
        self.sent.orders.append(order_id)
        payload = body if body is not None else genuine_callback(order_id)
        deadline = time.monotonic() + self.give_up_s
        delay = 0.1
        while True:
            try:
                async with self._limit, self._session.post(self.url, json=payload) as response:
                    await response.read()
                    status = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = exc.__class__.__name__
            self.sent.answers[status] += 1
            if status == "200":
                self.sent.acked.add(order_id)
                self.sent.last_ack_at = time.monotonic()
                return True
            if time.monotonic() + delay > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)


@dataclass
class Tally:
    recorded: int
    duplicates: int
    lost: int
    dead_lettered: int
    # Ingest jobs still in the queue (due, deferred for a retry, or held by a lease): 0 once drained.
    queued: int


async def tally(database_url: str, redis_url: str, prefix: str, acked: set[str]) -> Tally:
    """Read the outcome from Postgres and Redis (each order id is sent with one body only)."""
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT order_id, count(*) AS n FROM callbacks WHERE order_id LIKE $1 GROUP BY order_id", prefix + "-%"
        )
    finally:
        await conn.close()
    recorded = {row["order_id"] for row in rows}
    redis = Redis.from_url(redis_url, socket_timeout=5)
    try:
        dead = int(await redis.llen(DEAD_LETTER_KEY))
        queued = [job for job in await redis.zrange(QUEUE_NAME, 0, -1) if not job.startswith(b"cron:")]
    finally:
        await redis.aclose()
    return Tally(
        recorded=len(recorded),
        duplicates=sum(row["n"] - 1 for row in rows),
        lost=len(acked - recorded),
        dead_lettered=dead,
        queued=len(queued),
    )


async def settle(
    database_url: str,
    redis_url: str,
    prefix: str,
    acked: set[str],
    *,
    since: float,
    bound_s: float,
    loss_allowed: bool = False,
) -> tuple[Tally, float]:
    """Wait until the queue is drained and every acknowledged callback is recorded, at most bound_s (+5 s).

    Drained matters as much as recorded: an orphaned job whose callbacks another copy already
    recorded is still waiting for its lease to run out. Returns the tally and the seconds from
    `since` until settled (or until the wait gave up). A database or Redis still down is not settled.
    With loss_allowed (a volatile Redis), a drained queue is final even if callbacks are missing.
    """
    deadline = since + bound_s + 5
    while True:
        try:
            result: Tally | None = await tally(database_url, redis_url, prefix, acked)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, RedisError):
            result = None
        now = time.monotonic()
        if result is not None and result.queued == 0 and (result.lost == 0 or loss_allowed):
            return result, max(0.0, now - since)
        if now > deadline:
            return result or await tally(database_url, redis_url, prefix, acked), now - since
        await asyncio.sleep(0.25)
