"""Screenshots of the finance console for the docs: a throwaway database with two realistic days, real Chromium.

Run by hand: `.venv/bin/python scripts/screenshots.py`. It finds Postgres and Redis like `make run`
(DATABASE_URL / REDIS_URL, else scripts/local_services.sh), creates and migrates a database of its own,
builds the evidence with the worker's own code (encrypted and signed callbacks, the reconciler, alert
actions), serves the api on a loopback port, signs in as a finance user in Debian's Chromium
(/usr/bin/chromium; never a downloaded browser) and saves full-page PNGs, 1280 px wide, to
docs/screenshots/<page>.png. The database is dropped at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp import web
from playwright.async_api import Page, async_playwright
from screenshot_seed import MERCHANTS, USER, Seeded, seed  # scripts/ is on sys.path when run as a script

from ottrecon import db as worker_db
from ottrecon.api.app import create_app
from ottrecon.api.settings import ApiSettings, parse_tokens
from ottrecon.console.passwords import hash_password
from ottrecon.console.settings import ConsoleSettings, parse_users
from ottrecon.migrations import migrate

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
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


def server_urls(env: Mapping[str, str]) -> tuple[str, str]:
    """DATABASE_URL and REDIS_URL, else what scripts/local_services.sh finds or starts (as `make run` does)."""
    found = {name: env.get(name, "") for name in ("DATABASE_URL", "REDIS_URL")}
    if not all(found.values()):
        script = ROOT / "scripts" / "local_services.sh"
        lines = subprocess.run([str(script), "env"], check=True, capture_output=True, text=True).stdout
        for line in lines.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            if name in found and not found[name]:
                found[name] = value.strip("'\"")
    return found["DATABASE_URL"], found["REDIS_URL"]


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


async def shoot(page: Page, name: str) -> None:
    await page.wait_for_load_state("load")
    await page.screenshot(path=OUT / f"{name}.png", full_page=True)
    print(f"docs/screenshots/{name}.png", file=sys.stderr)


async def take_screenshots(base_url: str, password: str, seeded: Seeded) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("screenshots: install Chromium: apt-get install chromium")
    OUT.mkdir(parents=True, exist_ok=True)
    period = f"from={seeded.first_day}&to={seeded.last_day}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = await browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        await page.goto("/console/login")
        await shoot(page, "login")
        await page.fill("#username", USER)
        await page.fill("#password", password)
        await page.click("#login-submit")
        await page.wait_for_selector("[data-test=current-user]")

        # First the statement, through the page's own form as finance would upload it: the other pages
        # then show its differences too.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"ottpay_settlement_{seeded.last_day}.csv"
            path.write_text(seeded.statement, encoding="utf-8")
            await page.goto("/console/statements")
            await page.set_input_files("#statement-file", path)
            await page.click("#import-submit")
            await page.wait_for_selector("[data-test=difference-row]")
        await shoot(page, "statement")

        await page.goto(f"/console/?{period}")
        await shoot(page, "overview")
        await page.goto(f"/console/ledger?{period}&merchant_id=QC00001001")
        await page.wait_for_selector("[data-test=ledger-row]")
        await shoot(page, "ledger")
        await page.goto("/console/alerts")
        await page.wait_for_selector("[data-test=alert-row]")
        await shoot(page, "alerts")
        await page.goto(f"/console/order?merchant_id={seeded.evidence_merchant}&order_id={seeded.evidence_order}")
        await page.wait_for_selector("[data-test=callback-row]")
        await shoot(page, "evidence")
        await page.goto("/console/unpaid")
        await page.wait_for_selector("[data-test=unpaid-row]")
        await shoot(page, "unpaid")
        await page.goto("/console/rejected")
        await page.wait_for_selector("[data-test=rejected-row]")
        await shoot(page, "rejected")
        # Close the first day as finance would (its mismatches are disputed, so with a reason), then its report.
        await page.goto("/console/closes")
        await page.fill("#close-date", str(seeded.first_day))
        await page.fill("#close-note", "reviewed with the store managers")
        await page.fill("#close-force", "two disputes open with OTT Pay")
        await page.click("[data-test=close-button]")
        await page.wait_for_selector("[data-test=close-row]")
        await shoot(page, "closes")
        await page.goto(f"/console/close-report?{period}")
        await page.wait_for_selector("[data-test=report-page]")
        await shoot(page, "close-report")

        await browser.close()


async def main() -> int:
    admin_url, redis_url = server_urls(os.environ)
    name = f"ottrecon_shots_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    database_url = with_database(admin_url, name)
    try:
        await migrate(database_url)
        pool = await worker_db.create_pool(database_url, 2)
        try:
            seeded = await seed(pool, datetime.now(UTC))
        finally:
            await pool.close()
        password = secrets.token_urlsafe(18)
        settings = ApiSettings(
            database_url=database_url,
            redis_url=redis_url,
            token_digests=parse_tokens(secrets.token_urlsafe(32)),
            merchant_ids=frozenset(MERCHANTS),
            console=ConsoleSettings(
                users=parse_users(f"{USER}:finance:{hash_password(password)}"), insecure_cookies=True
            ),
        )
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            host, port = runner.addresses[0][:2]
            await take_screenshots(f"http://{host}:{port}", password, seeded)
        finally:
            await runner.cleanup()
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
