"""The internal API's aiohttp application (payments for point-of-sale systems)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ottrecon import db
from ottrecon.api import routes
from ottrecon.api.auth import token_middleware
from ottrecon.api.metrics import metrics_middleware
from ottrecon.api.openapi import openapi_spec
from ottrecon.api.settings import ApiSettings
from ottrecon.console import web as console_web
from ottrecon.console.app import create_console_app
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
    app.add_subapp(console_web.PREFIX + "/", create_console_app(settings.console, settings.database_url))
    return app


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[routes.SETTINGS]
    app[routes.POOL] = await db.create_pool(
        settings.database_url, 5, command_timeout_s=10, connect_timeout_s=5, max_inactive_s=300
    )
    app[routes.REDIS] = connect(settings.redis_url, KICK_TIMEOUT_S)
    # The console (a sub-app) shares the api's pool and queue client.
    app[console_web.POOL], app[console_web.REDIS] = app[routes.POOL], app[routes.REDIS]
    yield
    await app[routes.REDIS].aclose(close_connection_pool=True)
    await app[routes.POOL].close()


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())
