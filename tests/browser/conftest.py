"""Browser fixtures: one system Chromium per session, the real api on a loopback port, a fresh context per test.

Every test here runs on the session's event loop (Playwright's connection to the browser lives on the loop
that started it); the shared database and Redis fixtures only hand over URLs, so their own loop does not
matter. Evidence is built with tests/console/support.py, i.e. with the worker's real code.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Page, Route, ViewportSize, async_playwright
from playwright.async_api import expect as pw_expect

from ottpay.keys import MerchantKeys
from ottrecon import db as worker_db
from ottrecon.api.app import create_app
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.verdicts import RejectedCallback
from ottrecon.callbacks.verify import judge
from tests.conftest import MERCHANT, OLD_KEY, OTHER_KEY, OTHER_MERCHANT
from tests.console.conftest import api_settings
from tests.console.support import PASSWORDS, create_order, deliver, reconcile, today
from tests.integration.support import make_callback

HERE = Path(__file__).resolve().parent
# Debian's Chromium; never a browser downloaded by Playwright.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Any request the pages make to somewhere other than the loopback server is aborted and reported.
NOT_LOOPBACK = re.compile(r"^(?!http://127\.0\.0\.1[:/])")
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
# Failing fast keeps a broken page from eating the per-test timeout.
ACTION_TIMEOUT_MS = 10_000

# Three business dates of ledger rows for the filter and download tests.
DAYS = (date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3))
CHANNELS = ("ALIPAY", "WECHATPAY", "UNIONPAY")
MERCHANT_KEYS = {MERCHANT: OLD_KEY, OTHER_MERCHANT: OTHER_KEY}
# A merchant the workers hold no keys for when its callback arrives.
STRANGER = "NB00000001"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run this directory's tests on the session loop, where the session's browser lives."""
    session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if HERE in item.path.parents and pytest_asyncio.is_async_test(item):
            item.add_marker(session_loop, append=False)


def chromium_executable() -> str:
    """The system Chromium; a missing browser fails the suite (it must never silently skip)."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("Chromium not found on PATH: install Chromium: apt-get install chromium", pytrace=False)
    return found


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the whole session (Playwright gives it a fresh temporary user-data-dir)."""
    executable = chromium_executable()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@dataclass(frozen=True)
class Console:
    """The api process (console mounted) on a loopback port, and the database it reads."""

    base_url: str
    database_url: str
    redis_url: str
    pool: asyncpg.Pool


@pytest_asyncio.fixture(loop_scope="session")
async def console(database_url: str, redis_url: str) -> AsyncIterator[Console]:
    """The real api app on 127.0.0.1:<free port> over this test's fresh database, plain-http cookies."""
    runner = web.AppRunner(create_app(api_settings(database_url, redis_url)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    pool = await worker_db.create_pool(database_url, 2)
    try:
        yield Console(f"http://{host}:{port}", database_url, redis_url, pool)
    finally:
        await pool.close()
        await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser, console: Console) -> AsyncIterator[Page]:
    """A page in a fresh browser context (no cookies from other tests), addressed relative to the console."""
    context = await browser.new_context(base_url=console.base_url, viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    foreign: list[str] = []

    async def refuse(route: Route) -> None:
        foreign.append(route.request.url)
        await route.abort()

    await context.route(NOT_LOOPBACK, refuse)
    opened = await context.new_page()
    try:
        yield opened
    finally:
        await context.close()
    assert foreign == [], f"the pages asked for non-loopback addresses: {foreign}"


async def sign_in(page: Page, name: str, password: str | None = None) -> None:
    """Sign in through the real form and wait for the overview."""
    await page.goto("/console/login")
    await page.fill("#username", name)
    await page.fill("#password", password or PASSWORDS[name])
    await page.click("#login-submit")
    await pw_expect(page).to_have_url(re.compile(r"/console/$"))
    await pw_expect(page.locator("[data-test=current-user]")).to_have_text(name)


@dataclass(frozen=True)
class SeededOrder:
    """One order of the seeded ledger and what its row should say."""

    merchant_id: str
    order_id: str
    business_date: date
    channel: str
    recon_status: str


async def seed_ledger(pool: asyncpg.Pool, merchants: MerchantKeys) -> list[SeededOrder]:
    """Two merchants x three channels x three days, two orders each, paid by authentic callbacks.

    The second WECHATPAY order of each day is paid 1.00 short (amount_mismatch); every other one is paid
    exactly (matched). Two orders are never paid and flagged unpaid (today's business date). Reconciled.
    """
    seeded: list[SeededOrder] = []
    async with pool.acquire() as conn:
        for day in DAYS:
            for merchant_id, prefix in ((MERCHANT, "QC"), (OTHER_MERCHANT, "ON")):
                for channel in CHANNELS:
                    for n in (1, 2):
                        order_id = f"{prefix}{day:%m%d}{channel[:2]}{n}"
                        amount = 1000 + 100 * n + day.day
                        short = channel == "WECHATPAY" and n == 2
                        await create_order(conn, order_id, amount, biz_type=channel, merchant_id=merchant_id)
                        await deliver(
                            pool,
                            merchants,
                            order_id,
                            amount - 100 if short else amount,
                            day,
                            merchant_id=merchant_id,
                            key=MERCHANT_KEYS[merchant_id],
                        )
                        status = "amount_mismatch" if short else "matched"
                        seeded.append(SeededOrder(merchant_id, order_id, day, channel, status))
        for order_id in ("QCUNPAID1", "QCUNPAID2"):
            await create_order(conn, order_id, 2500, status="unpaid", age=timedelta(hours=2))
    await reconcile(pool)
    return seeded


async def short_payment(pool: asyncpg.Pool, merchants: MerchantKeys) -> int:
    """Order ORDERAM1 for 10.00 paid 9.00 today by an authentic callback; returns its amount_mismatch alert."""
    async with pool.acquire() as conn:
        await create_order(conn, "ORDERAM1", 1000)
    await deliver(pool, merchants, "ORDERAM1", 900, today())
    await reconcile(pool)
    async with pool.acquire() as conn:
        alert_id: int = await conn.fetchval("SELECT id FROM alerts WHERE order_id = 'ORDERAM1'")
    return alert_id


async def reject_stranger(pool: asyncpg.Pool, merchants: MerchantKeys) -> int:
    """A real 15.00 callback from STRANGER, judged with keys that lack it: kept as unknown_merchant."""
    verdict = judge(make_callback("ORDER12", "1500", merchant_id=STRANGER, key=OTHER_KEY), datetime.now(UTC), merchants)
    assert isinstance(verdict, RejectedCallback) and verdict.reason == "unknown_merchant"
    await callback_store.record(pool, [], [verdict])
    async with pool.acquire() as conn:
        rejected_id: int = await conn.fetchval("SELECT id FROM rejected_callbacks WHERE md5 = $1", verdict.md5)
    return rejected_id
