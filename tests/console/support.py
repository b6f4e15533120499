"""Helpers for the console tests: users with real scrypt hashes, a signed-in client, evidence in real tables."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp.test_utils import TestClient

from ottpay.keys import MerchantKeys
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.verdicts import RejectedCallback, VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.console.passwords import hash_password
from ottrecon.console.settings import ConsoleSettings, parse_users
from ottrecon.db import Connection
from ottrecon.reconciliation.reconcile import reconcile_pending
from tests.conftest import MERCHANT, OLD_KEY
from tests.integration.support import make_callback

TZ = "America/Toronto"
TEST_N = 2**14
PASSWORDS = {"fiona": "fiona-finance-pass", "victor": "victor-viewer-pass"}
_HIDDEN = re.compile(r'name="csrf_token" value="([^"]*)"')
_NEXT = re.compile(r'<a href="([^"]*)" rel="next"')


@cache
def users_text() -> str:
    """OTTRECON_CONSOLE_USERS for a finance user and a viewer (hashed once per test session: scrypt is slow).

    Hashed with TEST_N, far below production's 2**17, so that the suite's many sign-ins stay fast;
    console_settings() lowers password_n to match, so no test upgrades them by accident.
    """
    fiona, victor = (hash_password(PASSWORDS[name], n=TEST_N) for name in ("fiona", "victor"))
    return f"fiona:finance:{fiona},victor:viewer:{victor}"


def console_settings(**overrides: Any) -> ConsoleSettings:
    base: dict[str, Any] = {
        "users": parse_users(users_text()),
        "insecure_cookies": True,
        "failure_delay_s": 0.01,
        "password_n": TEST_N,
    }
    return ConsoleSettings(**(base | overrides))


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = _HIDDEN.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def next_link(html: str) -> str | None:
    """The page's "Next page" link, if it has one."""
    found = _NEXT.search(html)
    return found.group(1).replace("&amp;", "&") if found else None


async def sign_in(client: TestClient[Any, Any], name: str, password: str | None = None) -> str:
    """Sign in through the real form; returns the CSRF token of the new session (from the overview)."""
    form = await client.get("/console/login")
    token = csrf_of(await form.text())
    response = await client.post(
        "/console/login",
        data={"csrf_token": token, "username": name, "password": password or PASSWORDS[name], "next": ""},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    page = await client.get("/console/")
    assert page.status == 200
    return csrf_of(await page.text())


def toronto_noon(day: date) -> str:
    """A callback finish_time for noon (Toronto time) on that business date, in Beijing wall time as OTT Pay
    writes it (PROTOCOL.md section 4)."""
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(TZ))
    return noon.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y%m%d%H%M%S")


def today() -> date:
    return datetime.now(ZoneInfo(TZ)).date()


async def create_order(
    db: Connection,
    order_id: str,
    amount: int,
    *,
    tip: int = 0,
    biz_type: str = "ALIPAY",
    status: str = "awaiting_payment",
    merchant_id: str = MERCHANT,
    age: timedelta = timedelta(0),
) -> int:
    """An ACTIVEPAY order as the api stores it (created `age` ago)."""
    order_ref: int = await db.fetchval(
        """
        INSERT INTO orders (merchant_id, order_id, kind, biz_type, amount, tip, idempotency_key, request_sha256,
                            status, created_at)
        VALUES ($1, $2, 'ACTIVEPAY', $3, $4, $5, $2, 'sha', $6, now() - $7::interval) RETURNING id
        """,
        merchant_id,
        order_id,
        biz_type,
        amount,
        tip,
        status,
        age,
    )
    return order_ref


async def deliver(
    pool: asyncpg.Pool, merchants: MerchantKeys, order_id: str, amount: int, day: date, **fields: str
) -> VerifiedCallback | RejectedCallback:
    """A callback encrypted and signed for real, judged and recorded as the worker would."""
    body = make_callback(order_id, str(amount), finish_time=toronto_noon(day), **fields)
    verdict = judge(body, datetime.now(ZoneInfo("UTC")), merchants)
    if isinstance(verdict, VerifiedCallback):
        await callback_store.record(pool, [verdict], [])
    else:
        await callback_store.record(pool, [], [verdict])
    return verdict


async def reconcile(pool: asyncpg.Pool) -> None:
    await reconcile_pending(pool, business_tz=TZ)


__all__ = ["MERCHANT", "OLD_KEY"]


# n ledger rows spread over `days` business dates from `start`, three merchants and three channels; every
# tenth row an amount mismatch, every seventh unpaid; order ids O0000001…; a few cells a spreadsheet would run.
FILL_LEDGER = """
INSERT INTO ledger (merchant_id, order_id, kind, channel, order_status, expected_amount, expected_tip,
                    received_amount, received_tip, refunded_amount, fee, channel_payment_ids, callback_count,
                    paid_source, recon_status, amount_at_risk, created_at, paid_at, business_date)
SELECT (ARRAY['QC00000001', 'QC00000002', 'QC00000003'])[1 + i % 3],
       CASE WHEN i % 50 = 0 THEN '=HYPERLINK' || i ELSE 'O' || lpad(i::text, 7, '0') END,
       'ACTIVEPAY', (ARRAY['ALIPAY', 'WECHATPAY', 'UNIONPAY'])[1 + (i / 3) % 3],
       CASE WHEN i % 7 = 0 THEN 'unpaid' ELSE 'paid' END,
       1000 + i, i % 5,
       CASE WHEN i % 7 = 0 THEN NULL WHEN i % 10 = 0 THEN 900 + i ELSE 1000 + i END,
       CASE WHEN i % 7 = 0 THEN NULL ELSE i % 5 END,
       CASE WHEN i % 11 = 0 THEN 200 ELSE 0 END, 0,
       CASE WHEN i % 7 = 0 THEN '{}'::text[] ELSE ARRAY['AL' || i] END,
       CASE WHEN i % 7 = 0 THEN 0 ELSE 1 END,
       CASE WHEN i % 7 = 0 THEN NULL ELSE 'callback' END,
       CASE WHEN i % 7 = 0 THEN 'unpaid' WHEN i % 10 = 0 THEN 'amount_mismatch' ELSE 'matched' END,
       CASE WHEN i % 7 = 0 THEN 1000 + i WHEN i % 10 = 0 THEN 100 ELSE 0 END,
       '2024-05-01 12:00:00+00'::timestamptz + i * interval '1 minute',
       CASE WHEN i % 7 = 0 THEN NULL ELSE '2024-05-01 12:00:00.123456+00'::timestamptz + i * interval '1 minute' END,
       $2::date + (i % $3)
FROM generate_series(1, $1) AS i
"""


async def fill_ledger(db: asyncpg.Connection, n: int, start: date, days: int) -> None:
    await db.execute(FILL_LEDGER, n, start, days)
