"""The order's evidence page shows what issue 8 added: a finish time far from its receipt (the live zone
guard), which statement lines count and which a later statement superseded, and the total at risk."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp.test_utils import TestClient

from ottpay.keys import MerchantKeys
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.verdicts import VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.reconciliation.layouts import StatementLayout
from ottrecon.reconciliation.statements import import_statement
from tests.conftest import MERCHANT
from tests.console.support import create_order, reconcile, sign_in
from tests.integration.support import make_callback

HEADER = "merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n"


async def _record(
    pool: asyncpg.Pool, merchants: MerchantKeys, finish_time: str, received_at: datetime, order_id: str = "EV1"
) -> None:
    verdict = judge(make_callback(order_id, "1000", finish_time=finish_time), received_at, merchants)
    assert isinstance(verdict, VerifiedCallback)
    await callback_store.record(pool, [verdict], [])


async def test_order_evidence_flags_a_skewed_finish_time_and_superseded_statement_lines(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, tmp_path: Path
) -> None:
    received = datetime(2024, 5, 1, 16, 0, 30, tzinfo=UTC)
    beijing = received.astimezone(ZoneInfo("Asia/Shanghai"))
    await create_order(db, "EV1", 1000)
    # OTT Pay's own Beijing wall time: 30 s before receipt. Then a copy written in Toronto wall time, as the
    # wrong zone would give it: read as Beijing time it is 12 hours off, and must stand out.
    await _record(pool, merchants, f"{beijing:%Y%m%d%H%M%S}", received)
    toronto = received.astimezone(ZoneInfo("America/Toronto"))
    await _record(pool, merchants, f"{toronto:%Y%m%d%H%M%S}", received + timedelta(seconds=5))
    # Paid the same day, but missing from the statement.
    await create_order(db, "EV2", 1000)
    await _record(pool, merchants, f"{beijing:%Y%m%d%H%M%S}", received, "EV2")
    for name, amount, period in (("daily.csv", 900, ("01", "01")), ("may.csv", 1000, ("01", "31"))):
        path = tmp_path / name
        path.write_text(HEADER + f"{MERCHANT},EV1,ALEV1,{amount},0,20,0,2024-05-01 12:00:00\n")
        dates = tuple(datetime.strptime(f"2024-05-{day}", "%Y-%m-%d").date() for day in period)
        await import_statement(pool, path, StatementLayout(), period=(dates[0], dates[1]))
    await reconcile(pool)
    await sign_in(client, "victor")

    html = await (await client.get(f"/console/order?merchant_id={MERCHANT}&order_id=EV1")).text()

    rows = re.findall(r'<tr data-test="callback-row"( data-skewed="yes")?>', html)
    assert rows == ["", ' data-skewed="yes"']
    assert re.search(r'data-test="finish-time-skew">-12\.0 h from its receipt', html)
    lines = re.findall(r'data-test="statement-line-row" data-current="(yes|no)">.*?(daily|may)\.csv', html)
    assert lines == [("no", "daily"), ("yes", "may")]
    assert 'data-test="statement-provenance">(from import <a href="/console/statements/2">#2</a>)' in html
    missing = await (await client.get(f"/console/order?merchant_id={MERCHANT}&order_id=EV2")).text()
    # Matched between order and gateway (0), missing from the statement (10.00): one total, split shown.
    total = re.search(r'data-test="total-at-risk"><span class="money" data-cents="(\d+)"', missing)
    assert total is not None and total.group(1) == "1000"
    assert re.search(
        r"order vs gateway <span[^>]*>0\.00 CAD</span> \+ gateway vs statement <span[^>]*>10\.00 CAD", missing
    )
