"""Faults inside an ingest job: nothing that could be kept is dead-lettered, and a poison entry goes alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from arq import ArqRedis

from ottpay.keys import MerchantKeys
from ottrecon import db as worker_db
from ottrecon.db import fetch_one
from ottrecon.errors import DatabaseUnavailable
from ottrecon.queue import DEAD_LETTER_KEY
from tests.integration.support import drain, make_callback, worker_settings
from webhook.queue import PreparedCallback, enqueue_callbacks, prepare
from worker.jobs import UNEXPECTED_TRIES


def prepared(bodies: list[dict[str, Any]]) -> list[PreparedCallback]:
    """As the receiver's handler prepares them (no edge check: the worker must not rely on it)."""
    return [prepare(body, datetime.now(UTC)) for body in bodies]


async def _dead_letters(redis: ArqRedis) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in await redis.lrange(DEAD_LETTER_KEY, 0, -1)]  # type: ignore[misc]


async def _fail_inserts_for(db: asyncpg.Connection, order_id: str, *, times: int | None) -> None:
    """A trigger that refuses rows of one order: `times` times (a sequence counts, outside any
    transaction, so a rolled-back attempt still counts), or always when times is None."""
    limit = "true" if times is None else f"nextval('flaky_inserts') <= {times}"
    await db.execute("CREATE SEQUENCE IF NOT EXISTS flaky_inserts")
    await db.execute(
        f"""CREATE FUNCTION refuse_order() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.order_id = '{order_id}' AND {limit} THEN RAISE EXCEPTION 'refused by test'; END IF;
                RETURN NEW;
            END $$"""
    )
    await db.execute(
        "CREATE TRIGGER refuse_order BEFORE INSERT ON callbacks FOR EACH ROW EXECUTE FUNCTION refuse_order()"
    )


@pytest.mark.parametrize("extra", [float("nan"), float("inf"), float("-inf")], ids=["NaN", "Infinity", "1e999"])
async def test_unstorable_extra_field_is_rejected_with_a_reason_and_its_neighbours_recorded(
    extra: float,
    database_url: str,
    redis_url: str,
    redis: ArqRedis,
    merchants: MerchantKeys,
    db: asyncpg.Connection,
) -> None:
    odd: dict[str, Any] = {**make_callback("ODD1"), "extra": extra}  # a float, as json.loads makes of 1e999
    bodies: list[dict[str, Any]] = [make_callback("NEXT1"), odd, make_callback("NEXT2")]
    assert await enqueue_callbacks(redis, prepared(bodies)) == [True, True, True]  # one job for all three

    await drain(worker_settings(database_url, redis_url, merchants))

    assert await _dead_letters(redis) == []
    assert sorted(await db.fetchval("SELECT array_agg(order_id) FROM callbacks")) == ["NEXT1", "NEXT2"]
    row = await fetch_one(db, "SELECT reason, detail, envelope FROM rejected_callbacks")
    assert row["reason"] == "unstorable"
    assert "$.extra" in row["detail"] and "non-finite" in row["detail"]
    # The body is kept, escaped into a string Postgres can hold, for whoever investigates.
    kept = json.loads(json.loads(row["envelope"])["unstorable_json"])
    assert kept["data"] == odd["data"] and kept["md5"] == odd["md5"]


async def test_an_error_that_heals_on_retry_dead_letters_nothing(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    await _fail_inserts_for(db, "FLAKY", times=UNEXPECTED_TRIES - 1)
    assert await enqueue_callbacks(redis, prepared([make_callback("FLAKY", "1200")])) == [True]

    await drain(worker_settings(database_url, redis_url, merchants))

    assert await _dead_letters(redis) == []
    assert await db.fetchval("SELECT amount FROM payments WHERE order_id = 'FLAKY'") == 1200


async def test_a_poison_callback_is_dead_lettered_alone_after_a_few_tries(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    await _fail_inserts_for(db, "POISON", times=None)
    bodies = [make_callback("GOOD1"), make_callback("POISON"), make_callback("GOOD2")]
    assert await enqueue_callbacks(redis, prepared(bodies)) == [True, True, True]

    worker = await drain(worker_settings(database_url, redis_url, merchants))

    dead = await _dead_letters(redis)
    assert [[item["envelope"] for item in entry["callbacks"]] for entry in dead] == [[bodies[1]]]
    assert "RaiseError" in dead[0]["reason"]
    assert worker.jobs_retried >= UNEXPECTED_TRIES - 1
    assert sorted(await db.fetchval("SELECT array_agg(order_id) FROM callbacks")) == ["GOOD1", "GOOD2"]


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
        asyncpg.ProtocolError("unexpected message"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("connection is closed"),
    ],
    ids=lambda e: e.__class__.__name__,
)
async def test_client_and_protocol_level_errors_mean_postgres_is_unavailable(error: Exception) -> None:
    # What asyncpg raises on a pooled connection the server terminated during a restart: retry, never park.
    with pytest.raises(DatabaseUnavailable):
        async with worker_db.translate_errors():
            raise error


async def test_a_job_whose_tries_were_used_up_by_killed_workers_is_still_recorded(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    settings = worker_settings(database_url, redis_url, merchants)
    assert await enqueue_callbacks(redis, prepared([make_callback("KILLED", "900")])) == [True]
    job_id = (await redis.keys("arq:job:*"))[0].decode().removeprefix("arq:job:")
    # arq counts a try when it starts a job, so every worker killed mid-job used one up.
    await redis.set(f"arq:retry:{job_id}", settings.max_tries)

    await drain(settings)

    assert await db.fetchval("SELECT amount FROM payments WHERE order_id = 'KILLED'") == 900
