"""The ledger in a real browser: the filter form narrows the rows, and Download CSV is `ottrecon export ledger`."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from playwright.async_api import Page, expect

from ottpay.keys import MerchantKeys
from tests.browser.conftest import DAYS, Console, SeededOrder, seed_ledger, sign_in
from tests.conftest import MERCHANT, OTHER_MERCHANT

OTTRECON = Path(sys.executable).with_name("ottrecon")


async def shown_rows(page: Page) -> list[tuple[str, str]]:
    rows = page.locator("[data-test=ledger-row]")
    return [
        (await row.get_attribute("data-merchant") or "", await row.get_attribute("data-order") or "")
        for row in await rows.all()
    ]


def report_order(orders: list[SeededOrder]) -> list[tuple[str, str]]:
    """The ledger's order (business date, merchant, order id), as the page and the export list rows."""
    ordered = sorted(orders, key=lambda o: (o.business_date, o.merchant_id, o.order_id))
    return [(o.merchant_id, o.order_id) for o in ordered]


async def test_ledger_filter_form_shows_exactly_the_matching_rows(
    page: Page, console: Console, merchants: MerchantKeys
) -> None:
    seeded = await seed_ledger(console.pool, merchants)
    await sign_in(page, "victor")
    await page.click("[data-test=nav-ledger]")
    await expect(page.locator("[data-test=nav-ledger]")).to_have_attribute("aria-current", "page")

    await page.fill("#from", DAYS[1].isoformat())
    await page.fill("#to", DAYS[2].isoformat())
    await page.fill("#merchant_id", MERCHANT)
    await page.select_option("#channel", "WECHATPAY")
    await page.click("[data-test=apply-filters]")
    await expect(page).to_have_url(re.compile(r"channel=WECHATPAY"))
    in_range = [o for o in seeded if DAYS[1] <= o.business_date <= DAYS[2] and o.merchant_id == MERCHANT]
    wechat = [o for o in in_range if o.channel == "WECHATPAY"]
    await expect(page.locator("[data-test=ledger-row]")).to_have_count(len(wechat))
    assert await shown_rows(page) == report_order(wechat)

    await page.select_option("#recon_status", "amount_mismatch")
    await page.click("[data-test=apply-filters]")
    await expect(page).to_have_url(re.compile(r"recon_status=amount_mismatch"))
    short = [o for o in wechat if o.recon_status == "amount_mismatch"]
    await expect(page.locator("[data-test=ledger-row]")).to_have_count(len(short))
    assert await shown_rows(page) == report_order(short) == [(MERCHANT, "QC0502WE2"), (MERCHANT, "QC0503WE2")]
    # The filters survive the round trip and each one excluded something.
    await expect(page.locator("#from")).to_have_value(DAYS[1].isoformat())
    await expect(page.locator("#merchant_id")).to_have_value(MERCHANT)
    assert len(short) < len(wechat) < len(in_range) < len(seeded)
    for row in await page.locator("[data-test=ledger-row]").all():
        await expect(row.locator(".badge-amount_mismatch")).to_have_text("amount mismatch")

    await page.click("[data-test=order-link] >> nth=0")
    await expect(page.locator("[data-test=order-id]")).to_have_text("QC0502WE2")
    await expect(page.locator("[data-test=callback-row]")).to_have_count(1)


async def test_ledger_download_csv_is_byte_for_byte_the_cli_export(
    page: Page, console: Console, merchants: MerchantKeys, tmp_path: Path
) -> None:
    seeded = await seed_ledger(console.pool, merchants)
    await sign_in(page, "victor")
    date_from, date_to = DAYS[0].isoformat(), DAYS[1].isoformat()
    await page.goto("/console/ledger")
    await page.fill("#from", date_from)
    await page.fill("#to", date_to)
    await page.fill("#merchant_id", OTHER_MERCHANT)
    await page.click("[data-test=apply-filters]")
    await expect(page).to_have_url(re.compile(rf"merchant_id={OTHER_MERCHANT}"))
    wanted = [o for o in seeded if o.merchant_id == OTHER_MERCHANT and o.business_date <= DAYS[1]]
    await expect(page.locator("[data-test=ledger-row]")).to_have_count(len(wanted))

    async with page.expect_download() as started:
        await page.click("#download-csv")
    download = await started.value
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    assert await download.failure() is None

    cli = await asyncio.create_subprocess_exec(
        str(OTTRECON),
        "export",
        "ledger",
        "--from",
        date_from,
        "--to",
        date_to,
        "--merchant",
        OTHER_MERCHANT,
        "--format",
        "csv",
        env=os.environ | {"DATABASE_URL": console.database_url, "LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    exported, errors = await cli.communicate()

    assert cli.returncode == 0, errors.decode()
    assert f"exported {len(wanted)} row(s)" in errors.decode()
    assert download.suggested_filename == f"ledger_{date_from}_{date_to}.csv"
    assert saved.read_bytes() == exported
    lines = exported.decode().splitlines()
    assert lines[0].startswith("merchant_id,order_id,business_date,")
    assert [tuple(line.split(",")[:2]) for line in lines[1:]] == report_order(wanted)
