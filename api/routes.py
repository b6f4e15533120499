"""The API's request handlers: payments, refunds, QR codes."""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
from aiohttp import web
from arq import ArqRedis

from api import db, service
from api.auth import CLIENT
from api.errors import DatabaseUnavailable, IdempotencyConflict, InvalidRequest, NotFound, NotRefundable
from api.qr import qr_svg
from api.settings import ApiSettings
from api.views import STATUSES, payment_view, refund_view

logger = logging.getLogger("ottrecon.api")

SETTINGS = web.AppKey("settings", ApiSettings)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", ArqRedis)
PAGE_MAX = 200


async def create_payment(request: web.Request) -> web.Response:
    """POST /api/payments: store, submit, wait a bounded time for the gateway, answer the state."""
    settings, pool = request.app[SETTINGS], request.app[POOL]
    key = service.check_idempotency_key(request.headers.get("Idempotency-Key"))
    payment = service.PaymentRequest.parse(await _json(request), settings.merchant_ids)
    order, created = await service.create_payment(pool, request.app[REDIS], payment, key)
    logger.info(
        "payment created" if created else "payment replayed",
        extra={"merchant_id": order["merchant_id"], "order_id": order["order_id"], "client": request[CLIENT]},
    )
    order = await service.wait_for(pool, db.ORDER_BY_ID, order["order_id"], service.SETTLED, settings.wait_s)
    return web.json_response(payment_view(order, await _refunds(pool, order)), status=201 if created else 200)


async def get_payment(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    order = await _order(pool, request.match_info["payment_id"])
    return web.json_response(payment_view(order, await _refunds(pool, order)))


async def list_payments(request: web.Request) -> web.Response:
    """GET /api/payments?status=…&limit=…&after=…: newest first; `next` is the cursor for the next page."""
    status = request.query.get("status")
    problems = []
    if status is not None and status not in STATUSES:
        problems.append(f"status must be one of {', '.join(STATUSES)}")
    limit = _int_query(request, "limit", 50, problems)
    after = _int_query(request, "after", 0, problems) or None
    if problems or not 1 <= limit <= PAGE_MAX:
        raise InvalidRequest(problems or [f"limit must be 1-{PAGE_MAX}"])
    async with db.translate_errors(), request.app[POOL].acquire() as conn:
        rows = await conn.fetch(db.LIST_ORDERS, status, after, limit)
    cursor = rows[-1]["id"] if len(rows) == limit else None
    return web.json_response({"payments": [payment_view(r) for r in rows], "next": cursor})


async def payment_qr(request: web.Request) -> web.Response:
    order = await _order(request.app[POOL], request.match_info["payment_id"])
    if not order["code_url"]:
        raise NotFound("this payment has no QR code (not an ACTIVEPAY accepted by the gateway)")
    return web.Response(body=qr_svg(order["code_url"]), content_type="image/svg+xml")


async def create_refund(request: web.Request) -> web.Response:
    """POST /api/payments/{id}/refunds: store under its own refund order id, send, wait bounded."""
    settings, pool = request.app[SETTINGS], request.app[POOL]
    key = service.check_idempotency_key(request.headers.get("Idempotency-Key"))
    body = await _json(request)
    problems: list[str] = []
    amount = service.cents(body.get("amount") if isinstance(body, dict) else None, "amount", problems, minimum=1)
    if problems:
        raise InvalidRequest(problems)
    payment_id = request.match_info["payment_id"]
    refund, created = await service.create_refund(pool, request.app[REDIS], payment_id, amount, key)
    refund = await service.wait_for(
        pool, db.REFUND_BY_ID, refund["id"], frozenset({"succeeded", "failed"}), settings.wait_s
    )
    return web.json_response(refund_view(refund, payment_id), status=201 if created else 200)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Domain errors become JSON answers with a stable error code."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except InvalidRequest as exc:
        return _error(422, "invalid_request", exc.problems)
    except IdempotencyConflict as exc:
        return _error(409, "idempotency_conflict", [str(exc)])
    except NotFound as exc:
        return _error(404, "not_found", [str(exc)])
    except NotRefundable as exc:
        return _error(409, "not_refundable", [str(exc)])
    except DatabaseUnavailable:
        return _error(503, "database_unavailable", ["nothing was stored; retry with the same Idempotency-Key"])


async def _order(pool: asyncpg.Pool, payment_id: str) -> asyncpg.Record:
    async with db.translate_errors(), pool.acquire() as conn:
        order: asyncpg.Record | None = await conn.fetchrow(db.ORDER_BY_ID, payment_id)
    if order is None:
        raise NotFound()
    return order


async def _refunds(pool: asyncpg.Pool, order: asyncpg.Record) -> list[asyncpg.Record]:
    async with db.translate_errors(), pool.acquire() as conn:
        return list(await conn.fetch(db.REFUNDS_OF, order["id"]))


async def _json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(["body must be JSON"]) from exc


def _int_query(request: web.Request, name: str, default: int, problems: list[str]) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        problems.append(f"{name} must be a non-negative integer")
        return default
    return int(raw)


def _error(status: int, code: str, problems: list[str]) -> web.Response:
    return web.json_response({"error": code, "problems": problems}, status=status)
