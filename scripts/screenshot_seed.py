"""Seeds a throwaway database with two realistic business days for scripts/screenshots.py."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from ottpay.envelope import build_callback
from ottpay.keys import parse_merchant_keys
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.replay import report_configured_merchants
from ottrecon.callbacks.verdicts import RejectedCallback, VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.db import Connection, fetch_one
from ottrecon.reconciliation.alerts import acknowledge, resolve
from ottrecon.reconciliation.reconcile import mark_all_dirty, reconcile_pending

TZ_NAME = "America/Toronto"


TZ = ZoneInfo(TZ_NAME)


# Made-up merchants and keys for the pictures (not secrets); the third never reached the workers' keys.
STRANGER, STRANGER_KEY = "NB00003003", "5A5A5A5A5A5A5A5A"
MERCHANTS = {"QC00001001": "3F6A9C21B7D4E058", "ON00002002": "8E1D5B7A0C9F2463"}


CHANNEL_IDS = {"ALIPAY": "AL", "WECHATPAY": "WX", "UNIONPAY": "UP"}


PRICES = (899, 1250, 1575, 2340, 3199, 4500, 5625, 8900, 12800)


USER = "ana"


# What happens to the order at each position of a business day; every other position is paid exactly.
FATES = {2: "short", 5: "duplicate", 9: "late", 11: "unpaid", 14: "declined", 16: "orphan"}


@dataclass
class Seeded:
    """What the pages will be pointed at."""

    first_day: date
    last_day: date
    evidence_merchant: str
    evidence_order: str
    statement: str


def local(day: date, hour: int, minute: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


def callback(merchant_id: str, order_id: str, amount: int, tip: int, paid: datetime, channel_id: str) -> dict[str, str]:
    """A callback as OTT Pay sends it: encrypted and signed with the merchant's key, Beijing wall time."""
    data = {
        "merchant_id": merchant_id,
        "order_id": order_id,
        "amount": str(amount),
        "tip": str(tip),
        "bizpay_order_id": channel_id,
        # OTT Pay writes finish_time in Beijing time (PROTOCOL.md section 4).
        "finish_time": paid.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y%m%d%H%M%S"),
    }
    return build_callback(data, merchant_id, MERCHANTS.get(merchant_id, STRANGER_KEY))


async def receive(pool: asyncpg.Pool, envelope: dict[str, Any], at: datetime) -> None:
    """Judge and record a callback exactly as the worker does."""
    verdict = judge(envelope, at, parse_merchant_keys(",".join(f"{m}={k}" for m, k in MERCHANTS.items())))
    verified = [verdict] if isinstance(verdict, VerifiedCallback) else []
    rejected = [verdict] if isinstance(verdict, RejectedCallback) else []
    await callback_store.record(pool, verified, rejected)


async def create_order(
    conn: Connection, merchant_id: str, order_id: str, channel: str, amount: int, tip: int, at: datetime
) -> int:
    """An ACTIVEPAY order as the api stores it, with the gateway's acceptance of it."""
    order_ref: int = await conn.fetchval(
        "INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, tip, idempotency_key, request_sha256, "
        "status, created_at) VALUES ($1, $2, 'ACTIVEPAY', $3, $4, $5, $2, 'seed', 'awaiting_payment', $6) "
        "RETURNING id",
        merchant_id,
        order_id,
        channel,
        amount,
        tip,
        at,
    )
    await conn.execute(
        "INSERT INTO submission_attempts (order_ref, action, outcome, rsp_code, rsp_msg, sent, started_at, latency_ms) "
        "VALUES ($1, 'ACTIVEPAY', 'success', 'SUCCESS', 'success', true, $2, $3)",
        order_ref,
        at,
        random.randint(180, 900),
    )
    return order_ref


async def seed_day(pool: asyncpg.Pool, day: date, statement: list[str], *, refund: bool) -> dict[str, str]:
    """18 orders across both merchants and three channels, 09:00 to 21:00, with one of each kind of trouble.

    The first merchant's paid orders also go into the settlement statement (with a fee), except one left
    out, one at another amount, and one line for an order we never created. Returns order ids by fate.
    """
    by_fate: dict[str, str] = {}
    async with pool.acquire() as conn:
        for n in range(18):
            merchant_id = list(MERCHANTS)[n % 2]
            channel = list(CHANNEL_IDS)[n % 3]
            created = local(day, 9, 0) + timedelta(minutes=40 * n + random.randint(0, 25))
            amount, tip = random.choice(PRICES), random.choice((0, 0, 100, 150, 200))
            order_id = f"P{day:%y%m%d}{merchant_id[:2]}{n:02d}{random.randrange(16**4):04X}"
            channel_id = f"{CHANNEL_IDS[channel]}{day:%Y%m%d}{random.randint(10**9, 10**10 - 1)}"
            fate = FATES.get(n, "paid")
            by_fate.setdefault(fate, order_id)
            orphan = fate == "orphan"  # a payment for an order this system never created
            order_ref = 0 if orphan else await create_order(conn, merchant_id, order_id, channel, amount, tip, created)
            paid = created + timedelta(minutes=random.randint(1, 4), seconds=random.randint(0, 59))
            if fate in ("unpaid", "late"):
                await conn.execute(
                    "UPDATE orders SET status = 'unpaid', unpaid_flagged_at = $2 WHERE id = $1",
                    order_ref,
                    created + timedelta(minutes=30),
                )
                paid = created + timedelta(minutes=47)
            if fate == "declined":
                await conn.execute("UPDATE orders SET status = 'declined' WHERE id = $1", order_ref)
            if fate in ("unpaid", "declined"):
                continue
            received = amount - 200 if fate == "short" else amount
            await receive(pool, callback(merchant_id, order_id, received, tip, paid, channel_id), paid)
            if fate == "duplicate":
                again = paid + timedelta(minutes=2)
                await receive(pool, callback(merchant_id, order_id, amount, tip, again, channel_id + "2"), again)
            if merchant_id == "QC00001001" and fate in ("paid", "short"):
                fee = (received + tip) * 12 // 1000
                on_statement = received + 100 if n == 4 else received
                line = f"{merchant_id},{order_id},{channel_id},{on_statement},{tip},{fee},0,{paid:%Y-%m-%d %H:%M:%S}"
                if n != 8:  # left out of the statement: not_in_statement
                    statement.append(line)
        if refund:
            refunded = await fetch_one(
                conn,
                "SELECT id, merchant_id, order_id, amount FROM orders WHERE status = 'paid' ORDER BY created_at "
                "DESC LIMIT 1",
            )
            await conn.execute(
                "INSERT INTO refunds (order_ref, merchant_id, refund_order_id, amount, idempotency_key, "
                "request_sha256, status, succeeded_at) VALUES ($1, $2, $3, 500, $3, 'seed', 'succeeded', now())",
                refunded["id"],
                refunded["merchant_id"],
                "R" + refunded["order_id"][1:],
            )
            await conn.execute("UPDATE orders SET status = 'partially_refunded' WHERE id = $1", refunded["id"])
    when = local(day, 20, 55)
    statement.append(f"QC00001001,P{day:%y%m%d}QCXX0000,AL{day:%Y%m%d}77,2750,0,33,0,{when:%Y-%m-%d %H:%M:%S}")
    return by_fate


async def seed(pool: asyncpg.Pool, now: datetime) -> Seeded:
    """Two business days of trouble, orders still waiting at every age, rejected callbacks, alert actions."""
    random.seed(20240501)
    today = now.astimezone(TZ).date()
    days = (today - timedelta(days=2), today - timedelta(days=1))
    statement = ["merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time"]
    await seed_day(pool, days[0], [], refund=True)
    last = await seed_day(pool, days[1], statement, refund=False)
    async with pool.acquire() as conn:
        for n, (age, status) in enumerate(
            ((5, "pending"), (11, "awaiting_payment"), (38, "awaiting_payment"), (170, "unpaid"), (260, "review"))
        ):
            merchant_id = list(MERCHANTS)[n % 2]
            order_id = f"P{today:%y%m%d}{merchant_id[:2]}W{n}{random.randrange(16**4):04X}"
            ref = await create_order(
                conn, merchant_id, order_id, list(CHANNEL_IDS)[n % 3], PRICES[n + 2], 0, now - timedelta(minutes=age)
            )
            await conn.execute("UPDATE orders SET status = $2 WHERE id = $1", ref, status)
    # Rejected callbacks: a merchant the workers lacked keys for (received twice), a forged md5,
    # a body whose inner merchant differs from the envelope's, and an envelope missing its md5.
    stranger = callback(STRANGER, "P00STRANGER01", 4200, 0, now - timedelta(hours=5), "WX2024000001")
    await receive(pool, stranger, now - timedelta(hours=5))
    await receive(pool, stranger, now - timedelta(hours=4, minutes=50))
    tampered = callback("QC00001001", "P00TAMPERED01", 9900, 0, now - timedelta(hours=3), "AL2024000002")
    await receive(pool, tampered | {"md5": "0" * 32}, now - timedelta(hours=3))
    wrong = build_callback(
        {"merchant_id": "ON00002002", "order_id": "P00WRONG01", "amount": "1500", "tip": "0"},
        "QC00001001",
        MERCHANTS["QC00001001"],
    )
    await receive(pool, wrong, now - timedelta(hours=2))
    malformed = {k: v for k, v in callback("ON00002002", "P00NOMD5", 700, 0, now, "UP1").items() if k != "md5"}
    await receive(pool, malformed, now - timedelta(minutes=25))
    # The stranger's key has since been added to the workers (so its callback can be replayed).
    keys = ",".join(f"{m}={k}" for m, k in {**MERCHANTS, STRANGER: STRANGER_KEY}.items())
    await report_configured_merchants(pool, parse_merchant_keys(keys))

    await mark_all_dirty(pool)
    await reconcile_pending(pool, business_tz=TZ_NAME)
    async with pool.acquire() as conn:
        first_of_kind = "SELECT DISTINCT ON (kind) kind, id FROM alerts ORDER BY kind, id"
        alerts: dict[str, int] = {kind: alert_id for kind, alert_id in await conn.fetch(first_of_kind)}
        short: int = await conn.fetchval("SELECT id FROM alerts WHERE order_id = $1", last["short"])
    note = "Asked OTT Pay to reverse the second charge (ticket 4471)"
    await acknowledge(pool, alerts["duplicate_payment"], actor=USER, note=note)
    await resolve(pool, alerts["paid_after_flagged"], actor=USER, note="Paid late; the customer got the goods")
    await acknowledge(pool, short, actor=USER, note="The cashier keyed 54.25; asking the store about the 2.00")
    return Seeded(days[0], days[1], "QC00001001", last["short"], "\n".join(statement) + "\n")
