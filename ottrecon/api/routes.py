"""The API's request handlers: payments, refunds, QR codes."""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg
from aiohttp import web
from arq import ArqRedis

from ottpay import strict_json
from ottrecon.api.auth import CLIENT
from ottrecon.api.qr import qr_svg
from ottrecon.api.settings import ApiSettings
from ottrecon.api.views import NOT_HANDED_OVER, STATE_UNREAD, STATUSES, payment_view, refund_view
from ottrecon.db import translate_errors
from ottrecon.errors import DatabaseUnavailable
from ottrecon.payments import intake as service
from ottrecon.payments import refund_store, store
from ottrecon.payments.errors import (
    AuthCodeUsed,
    IdempotencyConflict,
    InvalidRequest,
    MaybeStored,
    NotFound,
    NotRefundable,
    NotStored,
)
from ottrecon.payments.statuses import REFUND_DONE, SETTLED, OrderStatus, RefundStatus
from ottrecon.queue import PROCESS_ORDER_JOB, PROCESS_REFUND_JOB, kick

logger = logging.getLogger("ottrecon.api")

SETTINGS = web.AppKey("settings", ApiSettings)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", ArqRedis)
PAGE_MAX = 200
LIST_QUERY = frozenset({"status", "limit", "after"})
INT64_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
# Ours are 20 characters of [0-9A-Z] (ottrecon.payments.intake.new_order_id); a little wider, never NUL or '/'.
_PAYMENT_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
# The console's mount point (console.web.PREFIX), kept here to avoid importing the console.
CONSOLE_PATH = "/console"
# aiohttp's own refusals, in the API's JSON shape.
HTTP_ERRORS = {
    400: ("bad_request", "the request is not valid HTTP for this API"),
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "this route does not take that method"),
    413: ("body_too_large", "the body is larger than the API accepts (64 KiB)"),
}


async def create_payment(request: web.Request) -> web.Response:
    """POST /api/payments: store, submit, wait a bounded time for the gateway, answer the state.

    Once the order is stored every answer carries it (finding 03): 202 with a notice when no worker could be
    asked to send it now, or when its state could not be read back; never an error saying nothing was stored.
    """
    settings, pool = request.app[SETTINGS], request.app[POOL]
    _no_query(request)
    key = service.check_idempotency_key(request.headers.get("Idempotency-Key"))
    payment = service.PaymentRequest.parse(await _json(request), settings.merchant_ids)
    order, created = await service.store_payment(pool, payment, key)
    logger.info(
        "payment created" if created else "payment replayed",
        extra={"merchant_id": order["merchant_id"], "order_id": order["order_id"], "client": request[CLIENT]},
    )
    handed_over = await kick(request.app[REDIS], PROCESS_ORDER_JOB, order["id"]) if created else True
    try:
        current = await service.wait_for(pool, store.ORDER_BY_ID, order["order_id"], SETTLED, settings.wait_s)
        view = payment_view(current, await _refunds(pool, current))
    except Exception as exc:
        _log_unread("payment", order["order_id"], exc)
        return _stored(payment_view(order), STATE_UNREAD, order["order_id"])
    if not handed_over and current["status"] == OrderStatus.PENDING:
        return _stored(view, NOT_HANDED_OVER, order["order_id"])
    return web.json_response(view, status=201 if created else 200)


async def get_payment(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    _no_query(request)
    order = await _order(pool, _payment_id(request))
    return web.json_response(payment_view(order, await _refunds(pool, order)))


async def list_payments(request: web.Request) -> web.Response:
    """GET /api/payments?status=…&limit=…&after=…: newest first; `next` is the cursor for the next page."""
    status = request.query.get("status")
    problems = _unknown_query(request, LIST_QUERY)
    if status is not None and status not in STATUSES:
        problems.append(f"status must be one of {', '.join(STATUSES)}")
    limit = _int_query(request, "limit", 50, problems)
    after = _int_query(request, "after", 0, problems) or None  # 0: from the newest
    if problems or not 1 <= limit <= PAGE_MAX:
        raise InvalidRequest(problems or [f"limit must be 1-{PAGE_MAX}"])
    async with translate_errors(), request.app[POOL].acquire() as conn:
        rows = await conn.fetch(store.LIST_ORDERS, status, after, limit)
    cursor = rows[-1]["id"] if len(rows) == limit else None
    return web.json_response({"payments": [payment_view(r) for r in rows], "next": cursor})


async def payment_qr(request: web.Request) -> web.Response:
    _no_query(request)
    order = await _order(request.app[POOL], _payment_id(request))
    if not order["code_url"]:
        raise NotFound("this payment has no QR code (not an ACTIVEPAY accepted by the gateway)")
    return web.Response(body=qr_svg(order["code_url"]), content_type="image/svg+xml")


async def create_refund(request: web.Request) -> web.Response:
    """POST /api/payments/{id}/refunds: store under its own refund order id, send, wait bounded."""
    settings, pool = request.app[SETTINGS], request.app[POOL]
    _no_query(request)
    key = service.check_idempotency_key(request.headers.get("Idempotency-Key"))
    body = await _json(request)
    problems: list[str] = []
    amount = service.cents(body.get("amount") if isinstance(body, dict) else None, "amount", problems, minimum=1)
    if problems:
        raise InvalidRequest(problems)
    payment_id = _payment_id(request)
    refund, created = await service.store_refund(pool, payment_id, amount, key)
    # Stored: from here on every answer carries it, as for payments.
    handed_over = await kick(request.app[REDIS], PROCESS_REFUND_JOB, refund["id"]) if created else True
    try:
        current = await service.wait_for(pool, refund_store.REFUND_BY_ID, refund["id"], REFUND_DONE, settings.wait_s)
    except Exception as exc:
        _log_unread("refund", refund["refund_order_id"], exc)
        return _stored(refund_view(refund, payment_id), STATE_UNREAD, payment_id)
    if not handed_over and current["status"] == RefundStatus.PENDING:
        return _stored(refund_view(current, payment_id), NOT_HANDED_OVER, payment_id)
    return web.json_response(refund_view(current, payment_id), status=201 if created else 200)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error outside the console is JSON `{"error", "problems"}` (the shape /api/openapi.json
    documents): domain errors with their stable codes, aiohttp's own (404, 405, 413…) and bugs too.

    The console (a sub-app these middlewares also wrap) answers with its own HTML pages.
    """
    if request.path.startswith(CONSOLE_PATH):
        page: web.StreamResponse = await handler(request)
        return page
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except InvalidRequest as exc:
        return _error(422, "invalid_request", exc.problems)
    except IdempotencyConflict as exc:
        return _error(409, "idempotency_conflict", [str(exc)])
    except AuthCodeUsed as exc:
        return _error(409, "auth_code_used", [str(exc)], payment_id=exc.payment_id)
    except NotFound as exc:
        return _error(404, "not_found", [str(exc)])
    except NotRefundable as exc:
        return _error(409, "not_refundable", [str(exc)])
    except (NotStored, MaybeStored) as exc:
        # Said as it is (finding 03): a POS told "nothing was stored" when it was retries with a new key.
        return _error(503, "database_unavailable", [str(exc)])
    except DatabaseUnavailable:
        return _error(503, "database_unavailable", ["the database is unavailable; retry later"])
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, problem = HTTP_ERRORS.get(exc.status, (f"http_{exc.status}", exc.reason))
        return _error(exc.status, code, [problem], headers=_kept_headers(exc))
    except Exception:
        logger.exception("api request failed", extra={"path": request.path, "method": request.method})
        return _error(
            500, "internal_error", ["an unexpected fault (logged); a retry with the same Idempotency-Key is safe"]
        )


def _stored(view: dict[str, Any], notice: str, payment_id: str) -> web.Response:
    """202: stored as shown and on its way, but not answered by the gateway; `notice` says why and what to do."""
    return web.json_response(view | {"notice": notice.format(payment_id=payment_id)}, status=202)


def _log_unread(what: str, order_id: str, exc: Exception) -> None:
    extra = {"stored": what, "order_id": order_id}
    if isinstance(exc, DatabaseUnavailable):
        logger.warning("stored; its state could not be read back", extra=extra | {"error": str(exc)})
    else:
        logger.exception("stored; answering with its state failed", extra=extra)


async def _order(pool: asyncpg.Pool, payment_id: str) -> asyncpg.Record:
    async with translate_errors(), pool.acquire() as conn:
        order: asyncpg.Record | None = await conn.fetchrow(store.ORDER_BY_ID, payment_id)
    if order is None:
        raise NotFound()
    return order


async def _refunds(pool: asyncpg.Pool, order: asyncpg.Record) -> list[asyncpg.Record]:
    async with translate_errors(), pool.acquire() as conn:
        return list(await conn.fetch(refund_store.REFUNDS_OF, order["id"]))


async def _json(request: web.Request) -> Any:
    """The body as strict JSON (ottpay.strict_json): NaN, 1e999, deep nesting, lone surrogates are a 422."""
    try:
        return strict_json.loads(await request.read(), max_depth=4)
    except strict_json.NotStrictJson as exc:
        raise InvalidRequest([f"body must be JSON: {exc}"]) from exc


def _int_query(request: web.Request, name: str, default: int, problems: list[str]) -> int:
    """A non-negative int64 of ASCII digits (str.isdigit also takes '²' and '٣'; Postgres ids are int8)."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or int(raw) > INT64_MAX:
        problems.append(f"{name} must be an integer from 0 to {INT64_MAX}")
        return default
    return int(raw)


def _unknown_query(request: web.Request, allowed: frozenset[str]) -> list[str]:
    """A typo (`limt=5`) must not be ignored silently; names are not echoed (they are client text)."""
    if set(request.query) <= allowed:
        return []
    return [f"unknown query parameter; this route takes {', '.join(sorted(allowed)) or 'none'}"]


def _no_query(request: web.Request) -> None:
    if problems := _unknown_query(request, frozenset()):
        raise InvalidRequest(problems)


def _payment_id(request: web.Request) -> str:
    """The path's payment id; one that cannot be ours (a NUL, say, which Postgres refuses) is simply not found."""
    payment_id = request.match_info["payment_id"]
    if not _PAYMENT_ID.fullmatch(payment_id):
        raise NotFound()
    return payment_id


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    # 405 must say which methods are allowed; the rest of aiohttp's headers describe its text body.
    return {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}


def _error(
    status: int,
    code: str,
    problems: list[str],
    headers: dict[str, str] | None = None,
    *,
    payment_id: str | None = None,
) -> web.Response:
    body: dict[str, Any] = {"error": code, "problems": problems}
    if payment_id is not None:
        body["payment_id"] = payment_id
    return web.json_response(body, status=status, headers=headers)
