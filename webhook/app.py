"""The receiver's aiohttp application: POST /ottpay/callback, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from arq import ArqRedis
from redis.exceptions import RedisError

from ottpay import strict_json
from ottpay.messages import SUCCESS_ACK, callback_shape_problems
from ottrecon.queue import connect
from ottrecon.redis_persistence import PersistenceWatch, stop_watch
from webhook import metrics
from webhook.batcher import EnqueueBatcher
from webhook.errors import QueueUnavailable
from webhook.malformed import quiet_malformed_requests
from webhook.queue import prepare
from webhook.settings import WebhookSettings

logger = logging.getLogger("ottrecon.webhook")
# The acknowledgement is the same for every callback: encoded once, the bytes web.json_response(SUCCESS_ACK) would
# write (json.dumps, UTF-8), instead of once per request (about 3 % of the receiver's CPU at full load).
_SUCCESS_ACK_BODY = json.dumps(SUCCESS_ACK).encode("utf-8")

SETTINGS = web.AppKey("settings", WebhookSettings)
REDIS = web.AppKey("redis", ArqRedis)
BATCHER = web.AppKey("batcher", EnqueueBatcher)
PERSISTENCE = web.AppKey("persistence", PersistenceWatch)


def create_app(settings: WebhookSettings) -> web.Application:
    """The receiver app. It only checks a body's shape: verifying needs the sign keys, which
    live in the worker (docs/decisions/0001-receiver-does-not-verify.md)."""
    quiet_malformed_requests()
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_redis_client)
    app.router.add_post("/ottpay/callback", receive_callback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _redis_client(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[REDIS] = connect(settings.redis_url, settings.enqueue_timeout_s)
    app[BATCHER] = EnqueueBatcher(app[REDIS], settings.enqueue_timeout_s)
    # How much a Redis restart could lose: read at start and periodically, for the metrics and the log.
    app[PERSISTENCE] = PersistenceWatch(app[REDIS], settings.persistence_check_every_s, process="web")
    watcher = asyncio.create_task(app[PERSISTENCE].run())
    yield
    await stop_watch(app[PERSISTENCE], watcher)
    await app[REDIS].aclose(close_connection_pool=True)


async def receive_callback(request: web.Request) -> web.Response:
    """Queue a callback; 200 only once Redis has it, 503 if not, 400/413 for non-callbacks.

    Everything about this one body (parsing, shape, fingerprint, serialization) happens here,
    before it joins a batch: a body that fails, fails alone (docs/SECURITY.md).
    """
    metrics.RECEIVED.inc()
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        metrics.REFUSED["body_too_large"].inc()
        return _error(413, "body_too_large", [f"limit is {request.app[SETTINGS].max_body_bytes} bytes"])
    received_at = datetime.now(UTC)
    try:
        body = strict_json.loads(raw, max_depth=2)
    except strict_json.NotStrictJson as exc:
        metrics.REFUSED["not_a_callback"].inc()
        return _error(400, "not_a_callback", [str(exc)])
    problems = callback_shape_problems(body)
    if problems:
        metrics.REFUSED["not_a_callback"].inc()
        return _error(400, "not_a_callback", problems)
    envelope: dict[str, Any] = body  # shape checked above
    try:
        prepared = prepare(envelope, received_at)
    except ValueError:
        # Unreachable after the checks above; if it happens, this request alone is refused.
        logger.exception("shape-checked callback could not be serialized")
        metrics.REFUSED["not_a_callback"].inc()
        return _error(400, "not_a_callback", ["the body cannot be stored as received"])
    try:
        fresh = await request.app[BATCHER].enqueue(prepared)
    except QueueUnavailable as exc:
        metrics.REFUSED["queue_unavailable"].inc()
        logger.error("callback not queued", extra={"merchant_id": envelope["merchant_id"], "error": str(exc)})
        return _error(503, "queue_unavailable", ["the callback was not kept; please retry"])
    # Counted by the batcher, once per write (a labelled inc per request cost ~1 % of the receiver's CPU).
    # Debug only: a line per callback costs ~9 % of the receiver's CPU (docs/BENCHMARKS.md); the
    # worker logs every callback it records, and the counters above count this one.
    logger.debug(
        "callback queued" if fresh else "callback already queued",
        extra={"merchant_id": envelope["merchant_id"], "md5": envelope["md5"]},
    )
    return web.Response(body=_SUCCESS_ACK_BODY, content_type="application/json", charset="utf-8")


async def healthz(request: web.Request) -> web.Response:
    """The process is alive (does not touch Redis)."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready (200) when Redis answers a PING, i.e. callbacks can be queued; 503 otherwise. Nothing else.

    This port is public: how Redis persists data, and why it is away, are for the metrics port
    (ottrecon_redis_durable, ottrecon_redis_persistence), the log and `ottrecon check-config`. A volatile
    Redis still takes callbacks (200): refusing them would lose more.
    """
    try:
        await request.app[REDIS].ping()
    except (RedisError, OSError, TimeoutError) as exc:
        logger.debug("not ready: redis does not answer", extra={"error": exc.__class__.__name__})
        return web.json_response({"status": "unavailable"}, status=503)
    return web.json_response({"status": "ok"})


def _error(status: int, code: str, problems: list[str]) -> web.Response:
    return web.json_response({"error": code, "problems": problems}, status=status)
