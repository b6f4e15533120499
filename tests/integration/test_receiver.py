"""The public receiver: what it accepts, what it refuses, and what it says when Redis is away."""

from __future__ import annotations

import asyncio
import logging
import socket

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from arq import ArqRedis
from prometheus_client import REGISTRY

from ottpay.keys import parse_merchant_keys
from ottrecon.queue import QUEUE_NAME, QUEUED_KEY_PREFIX
from tests.conftest import MERCHANT, OLD_KEY
from tests.integration.support import drain, make_callback, receiver, worker_settings
from webhook.app import create_app
from webhook.settings import WebhookSettings


async def test_receiver_queues_callback_and_acknowledges(redis_url: str, redis: ArqRedis) -> None:
    async with receiver(redis_url) as client:
        response = await client.post("/ottpay/callback", json=make_callback("R1"))
        assert response.status == 200
        assert await response.json() == {"rsp_code": "SUCCESS", "rsp_msg": "success"}
        # Byte for byte what OTT Pay has always been answered (the ack is encoded once, not per request).
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert await response.read() == b'{"rsp_code": "SUCCESS", "rsp_msg": "success"}'
    assert await redis.zcard(QUEUE_NAME) == 1


async def test_receiver_accepts_any_merchant_without_keys(redis_url: str, redis: ArqRedis) -> None:
    # The receiver holds no keys: verification is the worker's job, so unknown merchants queue too.
    body = make_callback("R2", merchant_id="ZZ99999999", key="FFFFFFFFFFFFFFFF")
    async with receiver(redis_url) as client:
        assert (await client.post("/ottpay/callback", json=body)).status == 200
    assert await redis.zcard(QUEUE_NAME) == 1


async def test_receiver_rejects_bodies_that_are_not_callbacks(redis_url: str, redis: ArqRedis) -> None:
    missing_md5 = {k: v for k, v in make_callback("R3").items() if k != "md5"}
    numeric = {**make_callback("R4"), "merchant_id": 12345}
    async with receiver(redis_url) as client:
        for body in (b"not json", b"[1, 2]", b"null", b"\xff\xfe"):
            response = await client.post("/ottpay/callback", data=body)
            assert response.status == 400
            assert (await response.json())["error"] == "not_a_callback"
        for obj in (missing_md5, numeric):
            response = await client.post("/ottpay/callback", json=obj)
            assert response.status == 400
            problems = (await response.json())["problems"]
            assert any("md5" in p or "merchant_id" in p for p in problems), problems
        nul = {**make_callback("R5"), "rsp_msg": "a\u0000b"}
        assert (await client.post("/ottpay/callback", json=nul)).status == 400
    assert await redis.zcard(QUEUE_NAME) == 0


async def test_receiver_refuses_oversized_bodies_with_413(redis_url: str, redis: ArqRedis) -> None:
    body = {**make_callback("R6"), "padding": "x" * (70 * 1024)}
    async with receiver(redis_url) as client:
        response = await client.post("/ottpay/callback", json=body)
        assert response.status == 413
        assert (await response.json())["error"] == "body_too_large"
    assert await redis.zcard(QUEUE_NAME) == 0


async def test_receiver_answers_503_when_redis_is_down() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    # Nothing listens on dead_port now: every enqueue fails to connect.
    app = create_app(WebhookSettings(redis_url=f"redis://127.0.0.1:{dead_port}/0", enqueue_timeout_s=0.5))
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/ottpay/callback", json=make_callback("R7"))
        assert response.status == 503
        assert (await response.json())["error"] == "queue_unavailable"
        not_ready = await client.get("/readyz")
        assert not_ready.status == 503
        # The public port says ready or not, nothing about what is behind it.
        assert await not_ready.json() == {"status": "unavailable"}
        assert (await client.get("/healthz")).status == 200


async def test_receiver_health_endpoints_when_redis_is_up(redis_url: str) -> None:
    async with receiver(redis_url) as client:
        assert (await client.get("/healthz")).status == 200
        ready = await client.get("/readyz")
        assert ready.status == 200
        # The public port says ready or not; Redis's persistence settings are for the metrics port, the logs
        # and check-config, not for whoever can reach the callback URL.
        assert await ready.json() == {"status": "ok"}


async def test_concurrent_callbacks_share_redis_writes_and_jobs(
    redis_url: str, redis: ArqRedis, database_url: str, db: asyncpg.Connection
) -> None:
    bodies = [make_callback(f"BATCH{n}") for n in range(60)]
    async with receiver(redis_url) as client:
        responses = await asyncio.gather(*(client.post("/ottpay/callback", json=b) for b in bodies))
        assert [r.status for r in responses] == [200] * 60
    jobs = await redis.zcard(QUEUE_NAME)
    # Callbacks that arrived while a write was in flight went out together in the next one.
    assert 1 <= jobs < 60
    assert len(await redis.keys(QUEUED_KEY_PREFIX + "*")) == 60  # one per queued body, until processed
    await drain(worker_settings(database_url, redis_url, parse_merchant_keys(f"{MERCHANT}={OLD_KEY}")))
    assert await db.fetchval("SELECT count(*) FROM callbacks") == 60
    # Processed bodies are released, so a later redelivery would be queued (and found a duplicate).
    assert await redis.keys(QUEUED_KEY_PREFIX + "*") == []


MALFORMED_REQUESTS = [
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    b"POST /ottpay/callback HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
    b"GARBAGE\r\n\r\n",
]


async def test_malformed_requests_are_counted_and_logged_quietly(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def malformed_total() -> float:
        return sum(
            sample.value
            for metric in REGISTRY.collect()
            if metric.name == "ottrecon_malformed_requests"
            for sample in metric.samples
            if sample.name.endswith("_total")
        )

    before = malformed_total()
    with caplog.at_level(logging.DEBUG):
        async with receiver(redis_url) as client:
            for raw in MALFORMED_REQUESTS:
                reader, writer = await asyncio.open_connection(client.host, client.port)
                writer.write(raw)
                await writer.drain()
                assert (await reader.read(100)).startswith(b"HTTP/1.0 400"), raw[:30]
                writer.close()
                await writer.wait_closed()
            # A genuine callback still gets through, and real errors would still be logged.
            assert (await client.post("/ottpay/callback", json=make_callback("AFTER_NOISE"))).status == 200

    assert malformed_total() - before == len(MALFORMED_REQUESTS)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("aiohttp")] == []
    quiet = [r for r in caplog.records if r.getMessage() == "malformed request refused with 400"]
    assert len(quiet) == len(MALFORMED_REQUESTS) and all(r.exc_info is None for r in quiet)
