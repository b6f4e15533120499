"""What an ingest job logs (decision 0035): one INFO line per job with its counts, a warning per rejection,
and each recorded or duplicate callback at DEBUG only."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from arq import ArqRedis

from ottpay.keys import MerchantKeys
from tests.integration.support import drain, make_callback, worker_settings
from webhook.queue import PreparedCallback, enqueue_callbacks, prepare
from worker.settings import WorkerSettings

_PER_CALLBACK = {"callback recorded", "callback duplicate"}


async def _two_jobs(redis: ArqRedis, settings: WorkerSettings) -> None:
    """Three genuine callbacks and a forgery in one job; then one of them redelivered (a duplicate) in another."""
    genuine = [make_callback(f"LOG{i}") for i in range(3)]
    forged = {**make_callback("LOG9"), "md5": "0" * 32}
    assert await enqueue_callbacks(redis, _prepared([*genuine, forged])) == [True] * 4
    await drain(settings)
    assert await enqueue_callbacks(redis, _prepared([genuine[0]])) == [True]
    await drain(settings)


def _prepared(bodies: list[dict[str, str]]) -> list[PreparedCallback]:
    return [prepare(body, datetime.now(UTC)) for body in bodies]


async def test_an_ingest_job_logs_one_info_line_with_its_counts(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ottrecon.worker")
    await _two_jobs(redis, worker_settings(database_url, redis_url, merchants))

    mine = [r for r in caplog.records if r.name == "ottrecon.worker"]
    summaries = [r for r in mine if r.getMessage() == "callbacks ingested"]
    counts = [(r.levelno, vars(r)["recorded"], vars(r)["duplicate"], vars(r)["rejected"]) for r in summaries]
    assert counts == [(logging.INFO, 3, 0, 1), (logging.INFO, 0, 1, 0)]
    assert [r.levelno for r in mine if r.getMessage() == "callback rejected"] == [logging.WARNING]
    assert not [r for r in mine if r.getMessage() in _PER_CALLBACK]


async def test_each_recorded_or_duplicate_callback_is_logged_at_debug(
    database_url: str, redis_url: str, redis: ArqRedis, merchants: MerchantKeys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ottrecon.worker")
    await _two_jobs(redis, worker_settings(database_url, redis_url, merchants))

    each = [r for r in caplog.records if r.name == "ottrecon.worker" and r.getMessage() in _PER_CALLBACK]
    assert sorted((r.getMessage(), vars(r)["order_id"]) for r in each) == [
        ("callback duplicate", "LOG0"),
        ("callback recorded", "LOG0"),
        ("callback recorded", "LOG1"),
        ("callback recorded", "LOG2"),
    ]
    assert {r.levelno for r in each} == {logging.DEBUG}
