"""Closing the books in a real browser: the close form's refusal and force, the close report on screen and in print."""

from __future__ import annotations

import re
from datetime import timedelta

from playwright.async_api import Page, expect

from ottpay.keys import MerchantKeys
from tests.browser.conftest import Console, sign_in
from tests.conftest import MERCHANT, OTHER_KEY, OTHER_MERCHANT
from tests.console.support import create_order, deliver, reconcile, today


async def test_close_a_day_then_print_its_close_report_one_page_per_merchant(
    page: Page, console: Console, merchants: MerchantKeys
) -> None:
    day = today() - timedelta(days=2)
    async with console.pool.acquire() as conn:
        await create_order(conn, "B1", 1000, age=timedelta(days=2))
        await create_order(conn, "B2", 2000, age=timedelta(days=2))
        await create_order(conn, "O1", 700, merchant_id=OTHER_MERCHANT, age=timedelta(days=2))
    await deliver(console.pool, merchants, "B1", 1000, day)
    await deliver(console.pool, merchants, "B2", 1900, day)  # 1.00 short: an unacknowledged mismatch
    await deliver(console.pool, merchants, "O1", 700, day, merchant_id=OTHER_MERCHANT, key=OTHER_KEY)
    await reconcile(console.pool)
    await sign_in(page, "fiona")
    await page.click("[data-test=nav-closes]")

    await page.fill("#close-date", str(day))
    await page.fill("#close-note", "reviewed")
    await page.click("[data-test=close-button]")
    await expect(page.locator("[data-test=refused-row]")).to_have_count(1)
    await expect(page.locator("[data-test=refused-row]")).to_contain_text("B2")
    await page.fill("#close-date", str(day))
    await page.fill("#close-note", "reviewed")
    await page.fill("#close-force", "B2 disputed")
    await page.click("[data-test=close-button]")
    await expect(page.locator("[data-test=notice]")).to_contain_text("Closed.")
    row = page.locator(f"[data-test=close-row][data-date='{day}']")
    await expect(row).to_have_attribute("data-state", "closed")
    await expect(row.locator("[data-test=forced]")).to_contain_text("B2 disputed")

    await row.locator("a").first.click()
    pages = page.locator("[data-test=report-page]")
    await expect(pages).to_have_count(2)
    await expect(
        page.locator(f"[data-test=report-page][data-merchant='{MERCHANT}'] [data-test=report-mismatch]")
    ).to_contain_text("carried open")
    # On paper: one merchant per page, no navigation.
    await page.emulate_media(media="print")
    await expect(page.locator("#nav")).to_be_hidden()
    breaks = await pages.evaluate_all("els => els.map(e => getComputedStyle(e).breakAfter)")
    assert breaks == ["page", "auto"]
    pdf = await page.pdf(format="A4")
    # Each PDF page object is "/Type /Page" (the page tree is "/Type /Pages").
    assert len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) == 2
