"""How much a Redis restart could lose is visible: /readyz JSON, a metric, and a loud log line on a volatile Redis."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq import ArqRedis
from prometheus_client import REGISTRY
from redis.asyncio import ConnectionPool

from tests.integration.processes import redis_server
from webhook.app import PERSISTENCE, create_app
from webhook.settings import WebhookSettings


def durable_metric() -> float | None:
    return REGISTRY.get_sample_value("ottrecon_redis_durable")


def mode_metric(mode: str) -> float | None:
    return REGISTRY.get_sample_value("ottrecon_redis_persistence", {"mode": mode})


async def test_readyz_and_metrics_show_a_durable_redis(tmp_path: Path) -> None:
    async with redis_server(tmp_path, "--appendonly", "yes", "--appendfsync", "always") as server:
        app = create_app(WebhookSettings(redis_url=server.url))
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/readyz")
            body = await response.json()
    assert response.status == 200
    assert body["status"] == "ok" and "warnings" not in body
    assert body["redis_persistence"] | {"loss_window": ""} == {
        "appendonly": "yes",
        "appendfsync": "always",
        "save": "",
        "mode": "aof-always",
        "durable": True,
        "volatile": False,
        "loss_window": "",
    }
    assert durable_metric() == 1
    assert mode_metric("aof-always") == 1 and mode_metric("none") == 0


async def test_a_volatile_redis_is_warned_about_loudly_and_a_fix_is_seen_at_the_next_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with redis_server(tmp_path) as server:  # no AOF, no snapshots: this machine's default
        app = create_app(WebhookSettings(redis_url=server.url))
        with caplog.at_level(logging.WARNING, logger="ottrecon.redis"):
            async with TestClient(TestServer(app)) as client:
                volatile = await (await client.get("/readyz")).json()
                assert durable_metric() == 0 and mode_metric("none") == 1

                # The operator turns on AOF with appendfsync always; the next periodic check sees it.
                redis = ArqRedis(ConnectionPool.from_url(server.url))
                await redis.config_set("appendfsync", "always")
                await redis.config_set("appendonly", "yes")
                await redis.aclose(close_connection_pool=True)
                await app[PERSISTENCE].check_once()
                fixed = await (await client.get("/readyz")).json()

    assert volatile["status"] == "ok"  # still taking callbacks: refusing them would lose more
    assert volatile["redis_persistence"]["mode"] == "none" and volatile["redis_persistence"]["volatile"]
    assert "volatile" in volatile["warnings"][0]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "REDIS IS VOLATILE" in errors[0].getMessage()
    assert fixed["redis_persistence"]["mode"] == "aof-always" and "warnings" not in fixed
    assert durable_metric() == 1


async def test_everysec_is_reported_with_its_machine_crash_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with redis_server(tmp_path, "--appendonly", "yes", "--appendfsync", "everysec") as server:
        app = create_app(WebhookSettings(redis_url=server.url))
        with caplog.at_level(logging.WARNING, logger="ottrecon.redis"):
            async with TestClient(TestServer(app)) as client:
                body = await (await client.get("/readyz")).json()
    assert body["redis_persistence"]["mode"] == "aof-everysec" and not body["redis_persistence"]["volatile"]
    assert "machine crash" in body["redis_persistence"]["loss_window"]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
