"""The receiver and the worker never import each other; this pins what they share."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import asyncpg
from arq import ArqRedis
from packaging.requirements import Requirement

import webhook.queue as receiver_side
import worker.queue as worker_side
from ottpay.keys import MerchantKeys
from tests.integration.support import drain, enqueue_callback, make_callback, worker_settings


def test_queue_names_and_job_name_match() -> None:
    assert receiver_side.QUEUE_NAME == worker_side.QUEUE_NAME
    assert receiver_side.INGEST_JOB == worker_side.INGEST_JOB


def test_serializers_are_json_and_interchangeable() -> None:
    payload = {"envelope": make_callback("C1", remarks="谢谢"), "received_at": "2026-11-26T12:00:00+00:00"}
    assert worker_side.deserialize(receiver_side.serialize(payload)) == payload
    assert receiver_side.deserialize(worker_side.serialize(payload)) == payload
    assert receiver_side.serialize(payload).startswith(b"{")


async def test_job_enqueued_by_the_receiver_is_run_by_the_worker(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    assert await enqueue_callback(redis, make_callback("C2"))
    raw = await redis.get(next(iter(await redis.keys("arq:job:*"))))
    # The stored job is plain JSON (no pickle) holding the envelope exactly as received.
    job = worker_side.deserialize(raw)
    assert job["f"] == worker_side.INGEST_JOB
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
