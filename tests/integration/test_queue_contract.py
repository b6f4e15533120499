"""The receiver and the worker never import each other; this pins the job format they share."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import asyncpg
from arq import ArqRedis
from packaging.requirements import Requirement

from ottpay.keys import MerchantKeys
from ottrecon.queue import INGEST_JOB, QUEUE_NAME, deserialize, serialize
from tests.integration.support import drain, enqueue_callback, make_callback, worker_settings
from webhook.queue import ARQ_JOB_KEY_PREFIX, enqueue_callbacks, prepare


def test_serializer_is_json_that_keeps_text_as_sent() -> None:
    envelope = make_callback("C1") | {"rsp_msg": "谢谢"}
    payload = {"envelope": envelope, "received_at": "2026-11-26T12:00:00+00:00"}
    raw = serialize(payload)
    assert raw.startswith(b"{") and "谢谢".encode() in raw  # JSON, never pickle; UTF-8, not \u escapes
    assert deserialize(raw) == payload


async def test_receiver_writes_the_job_exactly_as_arq_would(redis: ArqRedis) -> None:
    # webhook/queue.py writes arq's job format by hand (one Lua call per batch); arq's own enqueue_job,
    # given the same callback and the same serializer, must produce the very same bytes.
    prepared = prepare(make_callback("C3", remarks="谢谢"), datetime(2026, 11, 26, 12, tzinfo=UTC))
    assert await enqueue_callbacks(redis, [prepared]) == [True]
    (lua_key,) = await redis.keys(f"{ARQ_JOB_KEY_PREFIX}*")
    lua_raw = await redis.get(lua_key)
    lua_score = await redis.zscore(QUEUE_NAME, lua_key.decode().removeprefix(ARQ_JOB_KEY_PREFIX))
    item = deserialize(prepared.item)
    job = await redis.enqueue_job(INGEST_JOB, [item], _queue_name=QUEUE_NAME, _job_id="arq-own")
    assert job is not None
    arq_raw = await redis.get(f"{ARQ_JOB_KEY_PREFIX}arq-own")
    # Only the enqueue time differs (each side stamps its own).
    enqueued_at = int(deserialize(lua_raw)["et"])
    assert lua_score == enqueued_at
    arq_et = deserialize(arq_raw)["et"]
    assert lua_raw == arq_raw.replace(f'"et":{arq_et}'.encode(), f'"et":{enqueued_at}'.encode())


async def test_job_enqueued_by_the_receiver_is_run_by_the_worker(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    assert await enqueue_callback(redis, make_callback("C2"))
    raw = await redis.get(next(iter(await redis.keys("arq:job:*"))))
    # The stored job is plain JSON (no pickle) holding the envelope exactly as received.
    job = deserialize(raw)
    assert job["f"] == INGEST_JOB
    assert job["a"][0][0]["envelope"] == make_callback("C2")

    worker = await drain(worker_settings(database_url, redis_url, merchants))

    assert worker.jobs_failed == 0
    assert await db.fetchval("SELECT order_id FROM callbacks") == "C2"


def test_arq_is_pinned_to_the_version_this_contract_is_proven_against() -> None:
    # webhook/queue.py writes arq's internal job format itself, so production must run exactly the
    # arq these tests ran: an exact pin in the distribution's own requirements, and that version installed.
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    arq_requirements = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "arq"]
    assert len(arq_requirements) == 1
    (pin,) = arq_requirements[0].specifier
    assert pin.operator == "==", f"arq must be pinned exactly, not {arq_requirements[0].specifier}"
    assert version("arq") == pin.version
