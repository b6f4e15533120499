"""Signing in and out in a real browser: a wrong password is refused, the right one reaches the overview."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.browser.conftest import Console
from tests.console.support import PASSWORDS


async def test_login_wrong_password_shows_an_error_and_no_session(page: Page, console: Console) -> None:
    await page.goto("/console/")
    await expect(page).to_have_url(re.compile(r"/console/login$"))

    await page.fill("#username", "fiona")
    await page.fill("#password", "not-fionas-password")
    await page.click("#login-submit")

    await expect(page.locator("[data-test=login-error]")).to_have_text("Wrong user name or password.")
    await expect(page.locator("#username")).to_have_value("fiona")
    await expect(page.locator("#nav")).to_have_count(0)
    async with console.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM console_sessions") == 0


async def test_login_right_password_reaches_the_overview_and_logout_ends_the_session(
    page: Page, console: Console
) -> None:
    await page.goto("/console/ledger")  # signed out: sent to sign in, then back to the page asked for
    await expect(page).to_have_url(re.compile(r"/console/login\?next=(/|%2F)console(/|%2F)ledger$"))
    await page.fill("#username", "fiona")
    await page.fill("#password", PASSWORDS["fiona"])
    await page.click("#login-submit")
    await expect(page).to_have_url(re.compile(r"/console/ledger$"))

    await page.click("[data-test=nav-overview]")
    await expect(page).to_have_url(re.compile(r"/console/$"))
    await expect(page.locator("h1")).to_contain_text("Overview")
    await expect(page.locator("[data-test=nav-overview]")).to_have_attribute("aria-current", "page")
    await expect(page.locator("[data-test=current-user]")).to_have_text("fiona")
    await expect(page.locator("[data-test=current-role]")).to_have_text("finance")
    async with console.pool.acquire() as conn:
        assert await conn.fetchval("SELECT username FROM console_sessions") == "fiona"

    await page.click("[data-test=logout]")
    await expect(page.locator("#login-form")).to_be_visible()
    async with console.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM console_sessions") == 0
    # The old cookie is gone and its session deleted: every page asks to sign in again.
    await page.goto("/console/alerts")
    await expect(page).to_have_url(re.compile(r"/console/login\?next="))
    await expect(page.locator("[data-test=current-user]")).to_have_count(0)
