"""The live zone guard: a callback whose finish_time is more than an hour from its receipt is counted in
ottrecon_callbacks_finish_time_skewed_total (once, however often it is redelivered) and logged."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from ottpay.keys import MerchantKeys
from tests.integration.support import drain, make_callback, receiver, worker_settings
from tests.integration.test_metrics import delta, metrics_server, scrape


async def test_a_finish_time_hours_from_its_receipt_is_counted_once_and_logged(
    database_url: str, redis_url: str, merchants: MerchantKeys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ottrecon.metrics")
    now = datetime.now(UTC)
    # As OTT Pay writes it (Beijing time), and as a gateway on the wrong zone would (Toronto wall time).
    right = make_callback("SK1", finish_time=f"{now.astimezone(ZoneInfo('Asia/Shanghai')):%Y%m%d%H%M%S}")
    wrong = make_callback("SK2", finish_time=f"{now.astimezone(ZoneInfo('America/Toronto')):%Y%m%d%H%M%S}")
    settings = worker_settings(database_url, redis_url, merchants)
    async with metrics_server() as url:
        before = await scrape(url)
        async with receiver(redis_url) as client:
            for body in (right, wrong):
                assert (await client.post("/ottpay/callback", json=body)).status == 200
        await drain(settings)
        async with receiver(redis_url) as client:  # redelivered: a duplicate, not counted again
            assert (await client.post("/ottpay/callback", json=wrong)).status == 200
        await drain(settings)
        after = await scrape(url)

    assert delta(before, after, "ottrecon_callbacks_finish_time_skewed_total") == 1
    [logged] = [r for r in caplog.records if r.getMessage() == "callback finish_time far from its receipt"]
    fields = vars(logged)
    # Toronto is 12 h (summer) or 13 h (winter) behind Beijing; the receipt comes a moment after `now` and the
    # written time drops its fraction, so in winter the skew is 13 h and a second or more (-46801 s once, under load).
    assert fields["order_id"] == "SK2" and -13 * 3600 - 60 <= fields["skew_s"] <= -11 * 3600
