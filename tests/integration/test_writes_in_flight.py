"""The worker's group commit keeps more than one statement in flight (decision 0041).

At issue 13's load the worker spent a third of a drain waiting for Postgres to answer the one statement
it had in flight. With OTTRECON_WRITES_IN_FLIGHT (default 2), the next batch goes out on another
connection meanwhile. Shown here on real Postgres: a statement held up by a row lock must not hold up
the callbacks that arrive after it, and nothing may be left waiting however writes and flushers meet.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import asyncpg

from ottpay.keys import MerchantKeys
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.verdicts import Verdict, VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.errors import DatabaseUnavailable
from tests.conftest import MERCHANT
from tests.integration.support import make_callback
from worker.settings import WorkerSettings
from worker.writer import BatchWriter


def verified(order_id: str, merchants: MerchantKeys, amount: str = "100") -> VerifiedCallback:
    verdict = judge(make_callback(order_id, amount), datetime.now(UTC), merchants)
    assert isinstance(verdict, VerifiedCallback)
    return verdict


async def test_a_statement_held_up_in_postgres_does_not_hold_up_the_next(
    database_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as pool:
        writer = BatchWriter(lambda v, r: callback_store.record(pool, v, r), 500, WorkerSettings.writes_in_flight)
        # An uncommitted payment for order HELD: the first batch's insert of that payment waits for it.
        blocker = await asyncpg.connect(database_url)
        held = blocker.transaction()
        await held.start()
        await blocker.execute(
            "INSERT INTO payments (merchant_id, order_id, status, amount, tip, source) "
            "VALUES ($1, 'HELD', 'paid', 100, 0, 'callback')",
            MERCHANT,
        )
        try:
            first = asyncio.create_task(writer.write([verified("HELD", merchants)]))
            await asyncio.sleep(0.3)  # the first statement is now waiting on the row lock
            assert not first.done()
            second = await asyncio.wait_for(writer.write([verified("FREE", merchants)]), timeout=10)
            assert len(second.new) == 1 and not second.failures
            assert await db.fetchval("SELECT count(*) FROM callbacks WHERE order_id = 'FREE'") == 1
            assert not first.done()
        finally:
            await held.rollback()
            await blocker.close()
        outcome = await asyncio.wait_for(first, timeout=10)
        assert len(outcome.new) == 1 and not outcome.failures
    assert await db.fetchval("SELECT count(*) FROM payments") == 2


async def test_every_write_is_answered_however_writes_and_flushers_meet(
    database_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    # Writes arrive at random moments, some while a flusher is finding the queue empty and leaving: a write
    # that saw "enough flushers running" just as the last one left would wait for ever (bounded here).
    rng = random.Random(13)
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as pool:
        for in_flight in (1, 2, 3):
            writer = BatchWriter(lambda v, r: callback_store.record(pool, v, r), 7, in_flight)

            async def one(n: int, writer: BatchWriter = writer, in_flight: int = in_flight) -> int:
                await asyncio.sleep(rng.choice((0, 0, 0.001, 0.003)))
                verdicts: list[Verdict] = [
                    verified(f"W{in_flight}-{n}-{k}", merchants) for k in range(rng.randint(1, 4))
                ]
                outcome = await writer.write(verdicts)
                assert not outcome.failures
                # outcome.new is the statement's: this write's own callbacks are the ones it holds of them.
                return len({(v.merchant_id, v.md5) for v in verdicts} & outcome.new)

            recorded = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(120))), timeout=60)
            assert sum(recorded) == await db.fetchval(
                "SELECT count(*) FROM callbacks WHERE order_id LIKE $1", f"W{in_flight}-%"
            )


async def test_statements_in_flight_carrying_the_same_bodies_record_each_once(
    database_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    # Redeliveries can put one body in two batches written at once, in any order: they may wait on each other
    # (Postgres breaks a deadlock; the loser's callers get DatabaseUnavailable and retry, as a job would).
    rng = random.Random(29)
    bodies = [verified(f"SAME-{n}", merchants, amount=str(100 + n)) for n in range(40)]
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as pool:
        writer = BatchWriter(lambda v, r: callback_store.record(pool, v, r), 25, WorkerSettings.writes_in_flight)

        sampled: set[tuple[str, str]] = set()

        async def job() -> None:
            verdicts: list[Verdict] = rng.sample(bodies, 12)
            sampled.update((v.merchant_id, v.md5) for v in verdicts)
            for _ in range(20):
                try:
                    outcome = await writer.write(verdicts)
                except DatabaseUnavailable:
                    await asyncio.sleep(0.01)
                    continue
                assert not outcome.failures
                return
            raise AssertionError("a job never got its callbacks written")

        await asyncio.wait_for(asyncio.gather(*(job() for _ in range(60))), timeout=60)
    rows = await db.fetch("SELECT merchant_id, md5 FROM callbacks WHERE order_id LIKE 'SAME-%'")
    assert sorted((r["merchant_id"], r["md5"]) for r in rows) == sorted(sampled)  # each once, none lost
    payments = await db.fetch("SELECT order_id, amount FROM payments WHERE order_id LIKE 'SAME-%'")
    assert len(payments) == len(rows)
    assert all(p["amount"] == 100 + int(p["order_id"].split("-")[1]) for p in payments)
