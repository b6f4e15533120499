"""How much a Redis restart could lose is visible on the metrics port and in the log (loudly for a volatile Redis),
never on the receiver's public /readyz."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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


async def _persistence_seen_by(app: Any, client: TestClient[Any, Any]) -> dict[str, Any]:
    """What the receiver read of Redis's persistence (the metrics show it), and that /readyz shows none of it."""
    ready = await client.get("/readyz")
    assert ready.status == 200  # a volatile Redis still takes callbacks: refusing them would lose more
    assert await ready.json() == {"status": "ok"}
    latest = await app[PERSISTENCE].check_once()
    assert latest is not None
    report: dict[str, Any] = latest.report()
    return report


async def test_the_metrics_show_a_durable_redis_and_readyz_only_that_it_is_ready(tmp_path: Path) -> None:
    async with redis_server(tmp_path, "--appendonly", "yes", "--appendfsync", "always") as server:
        app = create_app(WebhookSettings(redis_url=server.url))
        async with TestClient(TestServer(app)) as client:
            report = await _persistence_seen_by(app, client)
    assert report | {"loss_window": ""} == {
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
                volatile = await _persistence_seen_by(app, client)
                assert durable_metric() == 0 and mode_metric("none") == 1

                # The operator turns on AOF with appendfsync always; the next periodic check sees it.
                redis = ArqRedis(ConnectionPool.from_url(server.url))
                await redis.config_set("appendfsync", "always")
                await redis.config_set("appendonly", "yes")
                await redis.aclose(close_connection_pool=True)
                fixed = await _persistence_seen_by(app, client)

    assert volatile["mode"] == "none" and volatile["volatile"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "REDIS IS VOLATILE" in errors[0].getMessage()
    assert fixed["mode"] == "aof-always"
    assert durable_metric() == 1


async def test_everysec_is_reported_with_its_machine_crash_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with redis_server(tmp_path, "--appendonly", "yes", "--appendfsync", "everysec") as server:
        app = create_app(WebhookSettings(redis_url=server.url))
        with caplog.at_level(logging.WARNING, logger="ottrecon.redis"):
            async with TestClient(TestServer(app)) as client:
                report = await _persistence_seen_by(app, client)
    assert report["mode"] == "aof-everysec" and not report["volatile"]
    assert "machine crash" in report["loss_window"]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
