"""Finance actions in a real browser: acknowledge and resolve an alert (audited), replay a rejected callback."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from ottpay.keys import MerchantKeys, parse_merchant_keys
from ottrecon.console.times import format_time
from tests.browser.conftest import STRANGER, Console, reject_stranger, short_payment, sign_in
from tests.conftest import MERCHANT, OLD_KEY, OTHER_KEY
from tests.console.support import TZ
from tests.integration.support import drain, worker_settings


async def test_alert_acknowledged_then_resolved_shows_who_when_and_why(
    page: Page, console: Console, merchants: MerchantKeys
) -> None:
    alert_id = await short_payment(console.pool, merchants)
    await sign_in(page, "fiona")
    await page.click("[data-test=nav-alerts]")
    await expect(page.locator("[data-test=count-open]")).to_have_text("1")
    row = page.locator(f"[data-test=alert-row][data-alert-id='{alert_id}']")
    await expect(row).to_have_attribute("data-status", "open")

    await row.locator("[data-test=review-alert]").click()
    alert = page.locator(f"article#alert-{alert_id}")
    await expect(alert).to_have_attribute("data-status", "open")
    await page.fill(f"#ack-note-{alert_id}", "calling the merchant about the missing 1.00")
    await alert.locator("[data-test=ack-button]").click()
    await expect(page.locator("[data-test=notice]")).to_be_visible()
    await expect(alert).to_have_attribute("data-status", "acknowledged")
    await expect(alert.locator("[data-test=ack-form]")).to_have_count(0)

    await page.fill(f"#resolve-note-{alert_id}", "customer paid the rest in cash")
    await alert.locator("[data-test=resolve-button]").click()
    await expect(alert).to_have_attribute("data-status", "resolved")
    await expect(alert.locator("[data-test=alert-status]")).to_have_text("resolved (manual)")
    await expect(alert.locator("[data-test=resolve-form]")).to_have_count(0)

    async with console.pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT action, actor, note, at FROM alert_events WHERE alert_id = $1 ORDER BY id", alert_id
        )
        status = await conn.fetchval("SELECT status FROM alerts WHERE id = $1", alert_id)
    assert status == "resolved"
    assert [(e["action"], e["actor"], e["note"]) for e in events] == [
        ("opened", "reconciler", ""),
        ("acknowledged", "fiona", "calling the merchant about the missing 1.00"),
        ("resolved", "fiona", "customer paid the rest in cash"),
    ]
    shown = alert.locator("[data-test=alert-event]")
    await expect(shown).to_have_count(3)
    for item, event in zip(await shown.all(), events, strict=True):
        await expect(item).to_have_attribute("data-action", event["action"])
        await expect(item).to_have_attribute("data-actor", event["actor"])
        await expect(item).to_contain_text(f"at {format_time(event['at'], TZ)}")
        if event["note"]:
            await expect(item.locator("[data-test=event-note]")).to_have_text(event["note"])

    await page.click("[data-test=nav-alerts]")
    await page.click("[data-test=tab-resolved]")
    resolved = page.locator(f"[data-test=alert-row][data-alert-id='{alert_id}']")
    await expect(resolved).to_have_attribute("data-status", "resolved")
    await expect(resolved.locator(".audit")).to_contain_text("resolved by fiona")
    await expect(resolved.locator(".audit")).to_contain_text("customer paid the rest in cash")


async def test_rejected_callback_replayed_once_its_merchant_is_configured_is_recorded(
    page: Page, console: Console, merchants: MerchantKeys
) -> None:
    rejected_id = await reject_stranger(console.pool, merchants)
    await sign_in(page, "fiona")
    await page.click("[data-test=nav-rejected]")
    row = page.locator(f"[data-test=rejected-row][data-rejected-id='{rejected_id}']")
    await expect(row).to_have_attribute("data-replayable", "no")
    await expect(row.locator("[data-test=replay-button]")).to_have_count(0)

    # The merchant is added to the workers' keys: a worker starting with them reports it to the console.
    keys = parse_merchant_keys(f"{MERCHANT}={OLD_KEY},{STRANGER}={OTHER_KEY}")
    settings = worker_settings(console.database_url, console.redis_url, keys)
    await drain(settings)
    await page.reload()
    await expect(row).to_have_attribute("data-replayable", "yes")

    await row.locator("[data-test=replay-button]").click()
    await expect(page).to_have_url(re.compile(rf"/console/rejected/{rejected_id}(\?|$)"))
    await expect(page.locator("[data-test=notice]")).to_be_visible()
    await expect(page.locator("[data-test=rejected-event]")).to_have_count(1)
    requested = page.locator("[data-test=rejected-event][data-action=replay_requested]")
    await expect(requested).to_have_attribute("data-actor", "fiona")
    await expect(page.locator("[data-test=rejected-outcome]")).to_have_text("still rejected")

    await drain(settings)  # the worker verifies the callback again with the stranger's key
    await page.reload()
    await expect(page.locator("[data-test=rejected-outcome]")).to_contain_text("recorded (recorded)")
    recorded = page.locator("[data-test=rejected-event][data-action=recorded]")
    await expect(recorded).to_have_attribute("data-actor", "fiona")
    await expect(page.locator("[data-test=replay-button]")).to_have_count(0)
    async with console.pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT action, actor FROM rejected_callback_events WHERE rejected_id = $1 ORDER BY id", rejected_id
        )
        paid = await conn.fetchval("SELECT amount FROM payments WHERE merchant_id = $1", STRANGER)
    assert [(e["action"], e["actor"]) for e in events] == [("replay_requested", "fiona"), ("recorded", "fiona")]
    assert paid == 1500

    await page.goto("/console/rejected?tab=resolved")
    await expect(page.locator(f"[data-test=rejected-row][data-rejected-id='{rejected_id}']")).to_contain_text(
        "recorded (recorded)"
    )
