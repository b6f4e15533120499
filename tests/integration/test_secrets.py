"""Sign keys and connection passwords never reach logs or reprs."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from ottpay.keys import MerchantKeys, parse_merchant_keys
from ottrecon.logs import JsonFormatter
from tests.conftest import MERCHANT, NEW_KEY, OLD_KEY, OTHER_KEY
from tests.integration.support import drain, enqueue_callback, make_callback, worker_settings
from webhook.settings import WebhookSettings
from worker.settings import WorkerSettings


def test_settings_reprs_hide_keys_and_urls() -> None:
    settings = WorkerSettings.from_env(
        {
            "DATABASE_URL": "postgresql://app:hunter2@db/ottrecon",
            "REDIS_URL": "redis://:s3cret@redis:6379/0",
            "OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY},{MERCHANT}={NEW_KEY}",
        }
    )
    shown = repr(settings) + str(settings.merchants)
    for secret in ("hunter2", "s3cret", OLD_KEY, NEW_KEY):
        assert secret not in shown
    assert "2 key(s)" in shown
    assert "s3cret" not in repr(WebhookSettings(redis_url="redis://:s3cret@redis:6379/0"))


async def test_worker_logs_carry_ids_but_no_keys(
    database_url: str,
    redis_url: str,
    redis: object,
    merchants: MerchantKeys,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from arq import ArqRedis

    assert isinstance(redis, ArqRedis)
    await enqueue_callback(redis, make_callback("LOG1"))
    await enqueue_callback(redis, make_callback("LOG2", merchant_id="NB00000001", key=OTHER_KEY))
    with caplog.at_level(logging.DEBUG):
        await drain(worker_settings(database_url, redis_url, merchants))

    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    text = "\n".join(lines)
    assert '"order_id": "LOG1"' in text and '"merchant_id": "QC00005496"' in text
    assert '"reason": "unknown_merchant"' in text
    for secret in (OLD_KEY, NEW_KEY, OTHER_KEY):
        assert secret not in text


def test_merchant_keys_parse_rotation_and_report_every_problem() -> None:
    keys = parse_merchant_keys(f" {MERCHANT}={OLD_KEY} , {MERCHANT}={NEW_KEY},{MERCHANT}={OLD_KEY}")
    assert keys.keys_for(MERCHANT) == (OLD_KEY, NEW_KEY)
    assert keys.keys_for("NOPE") == ()
    with pytest.raises(ValueError) as error:
        parse_merchant_keys(f"nokey,{MERCHANT}=,BAD-ID={OLD_KEY},{MERCHANT}=short")
    message = str(error.value)
    assert "entry 1" in message and "entry 2" in message and "entry 3" in message and "entry 4" in message
    assert OLD_KEY not in message
