"""Creating payments and refunds: validation, idempotency keys, storing before sending, bounded waits."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from arq import ArqRedis

from ottrecon.db import TRANSIENT_ERRORS, fetch_one, translate_errors
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
from ottrecon.payments.statuses import Channel, PaymentKind
from ottrecon.queue import PROCESS_ORDER_JOB, PROCESS_REFUND_JOB, kick

KINDS = tuple(PaymentKind)
BIZ_TYPES = tuple(Channel)
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_AUTH_CODE = re.compile(r"[0-9A-Za-z]{6,64}")
_SALE_NUM = re.compile(r"[0-9A-Za-z_-]{1,32}")
_ID_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I or O: read aloud at a till
MAX_CENTS = 10**12  # ten billion dollars: anything larger is a typo


@dataclass(frozen=True)
class PaymentRequest:
    """A validated request to take a payment."""

    merchant_id: str
    kind: str
    biz_type: str
    amount: int
    tip: int
    auth_code: str | None
    sale_num: str | None

    @classmethod
    def parse(cls, body: Any, merchant_ids: frozenset[str]) -> PaymentRequest:
        """Validate a JSON body, naming every problem at once (InvalidRequest)."""
        if not isinstance(body, dict):
            raise InvalidRequest(["body must be a JSON object"])
        problems: list[str] = []
        merchant_id = body.get("merchant_id")
        # Type first: a JSON object or array is unhashable, and `in merchant_ids` would raise.
        if not isinstance(merchant_id, str) or merchant_id not in merchant_ids:
            problems.append("merchant_id is not a merchant configured for payments (OTTPAY_OPERATORS)")
        kind = body.get("kind")
        if kind not in KINDS:
            problems.append(f"kind must be one of {', '.join(KINDS)}")
        biz_type = body.get("biz_type")
        if biz_type not in BIZ_TYPES:
            problems.append(f"biz_type must be one of {', '.join(BIZ_TYPES)}")
        amount = cents(body.get("amount"), "amount", problems, minimum=1)
        tip = cents(body.get("tip", 0), "tip", problems, minimum=0)
        auth_code = body.get("auth_code")
        if kind == "PASSIVEPAY" and not (isinstance(auth_code, str) and _AUTH_CODE.fullmatch(auth_code)):
            problems.append("auth_code (the scanned wallet code, 6-64 letters or digits) is required for PASSIVEPAY")
        if kind == "ACTIVEPAY" and auth_code is not None:
            problems.append("auth_code is only for PASSIVEPAY")
        sale_num = body.get("sale_num")
        if sale_num is not None and not (isinstance(sale_num, str) and _SALE_NUM.fullmatch(sale_num)):
            problems.append("sale_num must be 1-32 letters, digits, '-' or '_'")
        if problems:
            raise InvalidRequest(problems)
        return cls(
            str(merchant_id),
            str(kind),
            str(biz_type),
            amount,
            tip,
            auth_code if kind == "PASSIVEPAY" else None,
            sale_num,
        )

    def digest(self) -> str:
        """Identity of the request for idempotency checks (the auth code is hashed, never stored here)."""
        return _sha256(
            [self.merchant_id, self.kind, self.biz_type, self.amount, self.tip, self.auth_code, self.sale_num]
        )


def cents(value: Any, name: str, problems: list[str], *, minimum: int) -> int:
    """Money arrives as a JSON integer of cents; floats, strings and booleans are refused, never rounded."""
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{name} must be an integer number of cents (e.g. 1250 for 12.50)")
        return 0
    if not minimum <= value <= MAX_CENTS:
        problems.append(f"{name} must be between {minimum} and {MAX_CENTS} cents")
        return 0
    return value


def check_idempotency_key(key: str | None) -> str:
    if key is None or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest(["header Idempotency-Key is required: 1-64 letters, digits, '_', '.', ':' or '-'"])
    return key


def new_order_id(prefix: str) -> str:
    """A fresh OTT Pay order id: 20 characters of [0-9A-Z] (PROTOCOL §7), date first for humans."""
    random_part = "".join(secrets.choice(_ID_ALPHABET) for _ in range(13))
    return prefix + datetime.now(UTC).strftime("%y%m%d") + random_part


async def create_payment(
    pool: asyncpg.Pool, redis: ArqRedis, request: PaymentRequest, idempotency_key: str
) -> tuple[asyncpg.Record, bool]:
    """Store the order (store_payment) and ask a worker to submit it (best effort: the scheduled retry sends
    it otherwise). Returns (order, created)."""
    order, created = await store_payment(pool, request, idempotency_key)
    if created:
        await kick(redis, PROCESS_ORDER_JOB, order["id"])
    return order, created


async def store_payment(
    pool: asyncpg.Pool, request: PaymentRequest, idempotency_key: str
) -> tuple[asyncpg.Record, bool]:
    """Store the order, due for submission now (before anything is sent): the worker's scheduled retry sends it
    even if nobody asks a worker to.

    Returns (order, created). The same key with the same request returns the first order and
    submits nothing again; with a different request it raises IdempotencyConflict. A PASSIVEPAY whose
    wallet code an order of another key already holds raises AuthCodeUsed: a code pays once. Postgres
    failing raises NotStored or MaybeStored, which say whether the order may have been stored.
    """
    prefix = "A" if request.kind == "ACTIVEPAY" else "P"
    async with _storing() as storing, pool.acquire() as conn:
        try:
            storing.sent = True
            row = await conn.fetchrow(
                store.INSERT_ORDER,
                request.merchant_id,
                new_order_id(prefix),
                request.kind,
                request.biz_type,
                request.amount,
                request.tip,
                request.sale_num,
                request.auth_code,
                idempotency_key,
                request.digest(),
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != store.AUTH_CODE_KEY:
                raise
            # Postgres raised only once the holder committed, so this statement sees it.
            row = None
            holder = await fetch_one(conn, store.ORDER_BY_AUTH_CODE, request.merchant_id, request.auth_code)
            if holder["idempotency_key"] != idempotency_key:
                raise AuthCodeUsed(holder["order_id"], holder["status"]) from None
            # Else the same key raced itself here and lost on the code's index rather than the key's.
        if row is None:
            existing = await fetch_one(conn, store.ORDER_BY_KEY, request.merchant_id, idempotency_key)
            if existing["request_sha256"] != request.digest():
                raise IdempotencyConflict()
            return existing, False
    return row, True


async def create_refund(
    pool: asyncpg.Pool, redis: ArqRedis, order_id: str, amount: int, idempotency_key: str
) -> tuple[asyncpg.Record, bool]:
    """Store a refund (store_refund) and ask a worker to send it (best effort, as create_payment)."""
    refund, created = await store_refund(pool, order_id, amount, idempotency_key)
    if created:
        await kick(redis, PROCESS_REFUND_JOB, refund["id"])
    return refund, created


async def store_refund(
    pool: asyncpg.Pool, order_id: str, amount: int, idempotency_key: str
) -> tuple[asyncpg.Record, bool]:
    """Store a refund of a paid order under its own refund order id, due now for the worker.

    The order row is locked while the refundable amount is checked, so concurrent refunds can
    never exceed what was paid. Idempotent on (order, key) like store_payment, and like it raises
    NotStored or MaybeStored when Postgres fails.
    """
    digest = _sha256([order_id, amount])
    async with _storing() as storing, pool.acquire() as conn, conn.transaction():
        order = await conn.fetchrow(refund_store.LOCK_ORDER, order_id)
        if order is None:
            raise NotFound()
        existing = await conn.fetchrow(refund_store.REFUND_BY_KEY, order["id"], idempotency_key)
        if existing is not None:
            if existing["request_sha256"] != digest:
                raise IdempotencyConflict()
            return existing, False
        if order["status"] not in ("paid", "partially_refunded"):
            raise NotRefundable(f"payment is {order['status']}, only paid payments can be refunded")
        paid_tip = await conn.fetchval(refund_store.PAID_TIP, order["merchant_id"], order["order_id"])
        left = refund_store.refundable(order, paid_tip) - await conn.fetchval(
            refund_store.REFUNDED_OR_PENDING, order["id"]
        )
        if amount > left:
            raise NotRefundable(f"at most {left} cents can still be refunded")
        storing.sent = True
        row = await fetch_one(
            conn,
            refund_store.INSERT_REFUND,
            order["id"],
            order["merchant_id"],
            new_order_id("R"),
            amount,
            idempotency_key,
            digest,
        )
    return row, True


async def wait_for(pool: asyncpg.Pool, query: str, key: Any, done: frozenset[str], wait_s: float) -> asyncpg.Record:
    """Poll a row until its status is in done or wait_s passed; return the latest row either way."""
    deadline = time.monotonic() + wait_s
    async with translate_errors():
        while True:
            async with pool.acquire() as conn:
                row = await fetch_one(conn, query, key)
            if row["status"] in done or time.monotonic() >= deadline:
                return row
            await asyncio.sleep(0.1)


@dataclass
class _Storing:
    sent: bool = False  # the INSERT was sent: from then on a failure may follow a commit


@asynccontextmanager
async def _storing() -> AsyncIterator[_Storing]:
    """Postgres failing while a payment or refund is stored becomes what the client may truthfully be told:
    NotStored until the INSERT is sent, MaybeStored after it (the commit may have happened before the
    connection broke). Finding 03: the api once said "nothing was stored" after storing."""
    state = _Storing()
    try:
        yield state
    except TRANSIENT_ERRORS as exc:
        raise (MaybeStored if state.sent else NotStored)() from exc


def _sha256(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
