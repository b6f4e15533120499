"""The internal API's aiohttp application (payments for point-of-sale systems)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from api import db, routes
from api.auth import token_middleware
from api.metrics import metrics_middleware
from api.openapi import openapi_spec
from api.settings import ApiSettings
from console.app import create_console_app
from console.web import PREFIX as CONSOLE_PREFIX
from ottrecon.queue import KICK_TIMEOUT_S, connect


def create_app(settings: ApiSettings) -> web.Application:
    """Every route but /healthz, /api/openapi.json, GET /metrics (Prometheus) and the finance console
    (/console/, which signs people in itself) needs a bearer token."""
    app = web.Application(
        # metrics_middleware comes first: it counts the answers of the others, 401s included.
        middlewares=[metrics_middleware, routes.error_middleware, token_middleware(settings.token_digests)],
        client_max_size=64 * 1024,
    )
    app[routes.SETTINGS] = settings
    app.cleanup_ctx.append(_resources)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/api/openapi.json", _openapi)
    app.router.add_post("/api/payments", routes.create_payment)
    app.router.add_get("/api/payments", routes.list_payments)
    app.router.add_get("/api/payments/{payment_id}", routes.get_payment)
    app.router.add_get("/api/payments/{payment_id}/qr.svg", routes.payment_qr)
    app.router.add_post("/api/payments/{payment_id}/refunds", routes.create_refund)
    # The finance console (docs/CONSOLE.md): its own sessions, exempt from the bearer token.
    app.add_subapp(CONSOLE_PREFIX + "/", create_console_app(settings))
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[routes.SETTINGS]
    app[routes.POOL] = await db.create_pool(settings.database_url)
    app[routes.REDIS] = connect(settings.redis_url, KICK_TIMEOUT_S)
    yield
    await app[routes.REDIS].aclose(close_connection_pool=True)
    await app[routes.POOL].close()


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())
