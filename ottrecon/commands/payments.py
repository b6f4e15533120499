"""`ottrecon pay` and `ottrecon refund`: the API's service layer from the command line."""

from __future__ import annotations

import argparse
import json
import secrets
from collections.abc import Mapping

from ottrecon import db
from ottrecon.api.settings import ApiSettings
from ottrecon.api.views import payment_view, refund_view
from ottrecon.payments import intake as service
from ottrecon.payments import store
from ottrecon.payments.errors import InvalidRequest
from ottrecon.queue import KICK_TIMEOUT_S, connect


def _settings(env: Mapping[str, str]) -> ApiSettings:
    # The command line needs no API token: it acts with the operator's own database access.
    return ApiSettings.from_env({**env, "OTTRECON_API_TOKENS": env.get("OTTRECON_API_TOKENS") or "x" * 32})


async def pay(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Create a payment like POST /api/payments and print it as JSON (exit 0 even if declined)."""
    settings = _settings(env)
    body = {
        "merchant_id": args.merchant,
        "kind": args.kind,
        "biz_type": args.biz_type,
        "amount": args.amount,
        "tip": args.tip,
    }
    if args.auth_code:
        body["auth_code"] = args.auth_code
    request = service.PaymentRequest.parse(body, settings.merchant_ids)
    key = service.check_idempotency_key(args.idempotency_key or secrets.token_hex(12))
    pool = await db.create_pool(settings.database_url, 5, command_timeout_s=10, connect_timeout_s=5, max_inactive_s=300)
    redis = connect(settings.redis_url, KICK_TIMEOUT_S)
    try:
        order, _ = await service.create_payment(pool, redis, request, key)
        order = await service.wait_for(pool, store.ORDER_BY_ID, order["order_id"], service.SETTLED, args.wait)
    finally:
        await redis.aclose(close_connection_pool=True)
        await pool.close()
    print(json.dumps(payment_view(order), indent=2))
    return 0


async def refund(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Create a refund like POST /api/payments/{id}/refunds and print it as JSON."""
    settings = _settings(env)
    problems: list[str] = []
    amount = service.cents(args.amount, "amount", problems, minimum=1)
    if problems:
        raise InvalidRequest(problems)
    key = service.check_idempotency_key(args.idempotency_key or secrets.token_hex(12))
    pool = await db.create_pool(settings.database_url, 5, command_timeout_s=10, connect_timeout_s=5, max_inactive_s=300)
    redis = connect(settings.redis_url, KICK_TIMEOUT_S)
    try:
        row, _ = await service.create_refund(pool, redis, args.payment_id, amount, key)
        row = await service.wait_for(pool, store.REFUND_BY_ID, row["id"], frozenset({"succeeded", "failed"}), args.wait)
    finally:
        await redis.aclose(close_connection_pool=True)
        await pool.close()
    print(json.dumps(refund_view(row, args.payment_id), indent=2))
    return 0
