"""Roles in a real browser: a viewer reads every page but is offered no action, where finance is."""

from __future__ import annotations

from playwright.async_api import Page, expect

from ottpay.keys import MerchantKeys, parse_merchant_keys
from ottrecon.callbacks.replay import report_configured_merchants
from tests.browser.conftest import STRANGER, Console, reject_stranger, short_payment, sign_in
from tests.conftest import MERCHANT, OTHER_KEY

# Every control that changes something; all of them are POST forms.
ACTIONS = (
    "main form[method=post], [data-test=ack-form], [data-test=resolve-form], [data-test=replay-button], #statement-form"
)


async def test_viewer_sees_no_action_buttons_where_finance_does(
    page: Page, console: Console, merchants: MerchantKeys
) -> None:
    # An open alert and a rejected callback that a worker could replay: finance gets buttons for both.
    await short_payment(console.pool, merchants)
    rejected_id = await reject_stranger(console.pool, merchants)
    await report_configured_merchants(console.pool, parse_merchant_keys(f"{STRANGER}={OTHER_KEY}"))
    evidence = f"/console/order?merchant_id={MERCHANT}&order_id=ORDERAM1"
    pages = (
        "/console/",
        "/console/ledger",
        "/console/alerts",
        evidence,
        "/console/unpaid",
        "/console/rejected",
        f"/console/rejected/{rejected_id}",
        "/console/statements",
    )

    await sign_in(page, "fiona")
    offered: dict[str, int] = {}
    for path in pages:
        await page.goto(path)
        offered[path] = await page.locator(ACTIONS).count()
    assert offered[evidence] > 0 and offered[f"/console/rejected/{rejected_id}"] > 0
    assert offered["/console/rejected"] > 0 and offered["/console/statements"] > 0
    await page.click("[data-test=logout]")
    await expect(page.locator("#login-form")).to_be_visible()

    await sign_in(page, "victor")
    await expect(page.locator("[data-test=current-role]")).to_have_text("viewer")
    for path in pages:
        await page.goto(path)
        await expect(page.locator("#nav")).to_be_visible()
        await expect(page.locator(ACTIONS)).to_have_count(0)
    await page.goto(evidence)
    await expect(page.locator("article[data-test=alert]")).to_have_attribute("data-status", "open")
    await page.goto("/console/rejected")
    row = page.locator(f"[data-test=rejected-row][data-rejected-id='{rejected_id}']")
    await expect(row).to_have_attribute("data-replayable", "yes")
    await expect(page.locator("[data-test=nav-alerts]")).to_be_visible()
