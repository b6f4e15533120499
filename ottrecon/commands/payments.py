"""`ottrecon pay` and `ottrecon refund`: payments intake from the command line, answered in the api's JSON."""

from __future__ import annotations

import argparse
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg
from arq import ArqRedis

from ottpay.keys import parse_operator_ids
from ottrecon import db
from ottrecon.api.views import STATE_UNREAD, payment_view, refund_view
from ottrecon.config import EnvReader
from ottrecon.errors import ConfigError, DatabaseUnavailable
from ottrecon.payments import intake as service
from ottrecon.payments import refund_store, store
from ottrecon.payments.errors import InvalidRequest
from ottrecon.payments.statuses import REFUND_DONE, SETTLED
from ottrecon.queue import KICK_TIMEOUT_S, connect


@dataclass(frozen=True)
class CommandSettings:
    """What `pay` and `refund` need: the database, the queue, and which merchants take payments. No api token,
    no console: the command acts with the operator's own database access."""

    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    merchant_ids: frozenset[str]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CommandSettings:
        problems: list[str] = []
        reader = EnvReader(env, problems)
        database_url, redis_url = reader.required("DATABASE_URL"), reader.required("REDIS_URL")
        merchant_ids: frozenset[str] = frozenset()
        try:
            merchant_ids = frozenset(parse_operator_ids(env.get("OTTPAY_OPERATORS", "")))
        except ValueError as exc:
            problems.append(f"OTTPAY_OPERATORS: {exc}")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return cls(database_url, redis_url, merchant_ids)


async def _connect(settings: CommandSettings) -> tuple[asyncpg.Pool, ArqRedis]:
    # The api's pool settings: these commands do what its routes do.
    pool = await db.create_pool(settings.database_url, 5, command_timeout_s=10, connect_timeout_s=5, max_inactive_s=300)
    return pool, connect(settings.redis_url, KICK_TIMEOUT_S)


async def pay(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Create a payment like POST /api/payments and print it as JSON (exit 0 even if declined)."""
    settings = CommandSettings.from_env(env)
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
    pool, redis = await _connect(settings)
    try:
        order, _ = await service.create_payment(pool, redis, request, key)
        view = payment_view(order)
        try:
            view = payment_view(await service.wait_for(pool, store.ORDER_BY_ID, order["order_id"], SETTLED, args.wait))
        except DatabaseUnavailable:
            # Stored: say so, as the api's 202 does, rather than an error that reads like nothing happened.
            view["notice"] = STATE_UNREAD.format(payment_id=order["order_id"])
    finally:
        await redis.aclose(close_connection_pool=True)
        await pool.close()
    print(json.dumps(view, indent=2))
    return 0


async def refund(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Create a refund like POST /api/payments/{id}/refunds and print it as JSON."""
    settings = CommandSettings.from_env(env)
    problems: list[str] = []
    amount = service.cents(args.amount, "amount", problems, minimum=1)
    if problems:
        raise InvalidRequest(problems)
    key = service.check_idempotency_key(args.idempotency_key or secrets.token_hex(12))
    pool, redis = await _connect(settings)
    try:
        row, _ = await service.create_refund(pool, redis, args.payment_id, amount, key)
        view = refund_view(row, args.payment_id)
        try:
            view = refund_view(
                await service.wait_for(pool, refund_store.REFUND_BY_ID, row["id"], REFUND_DONE, args.wait),
                args.payment_id,
            )
        except DatabaseUnavailable:
            view["notice"] = STATE_UNREAD.format(payment_id=args.payment_id)
    finally:
        await redis.aclose(close_connection_pool=True)
        await pool.close()
    print(json.dumps(view, indent=2))
    return 0
