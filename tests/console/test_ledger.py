"""The ledger page: every filter narrows the rows, keyset pages return each row once, the CSV is the export's."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import date, timedelta
from html import unescape
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from ottrecon.reconciliation.reports import export_report
from tests.console.support import fill_ledger, next_link, sign_in, today

START = date(2024, 5, 1)
ROW = re.compile(r'data-test="ledger-row" data-merchant="([^"]*)" data-order="([^"]*)"')


async def page_rows(client: TestClient[Any, Any], path: str) -> tuple[list[tuple[str, str]], str | None]:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    html = await response.text()
    return ROW.findall(html), next_link(html)


async def all_rows(client: TestClient[Any, Any], path: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    link: str | None = path
    while link is not None:
        page, link = await page_rows(client, link)
        rows += page
    return rows


async def expected(db: asyncpg.Connection, where: str, *args: object) -> list[tuple[str, str]]:
    records = await db.fetch(
        f"SELECT merchant_id, order_id FROM ledger WHERE {where} ORDER BY business_date, merchant_id, order_id", *args
    )
    return [(r["merchant_id"], r["order_id"]) for r in records]


async def test_ledger_defaults_to_today_in_the_display_time_zone(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await fill_ledger(db, 6, today() - timedelta(days=1), 2)
    await sign_in(client, "victor")

    rows, _ = await page_rows(client, "/console/ledger")

    assert rows == await expected(db, "business_date = $1", today())
    assert 0 < len(rows) < 6


async def test_ledger_filters_each_narrow_the_rows(client: TestClient[Any, Any], db: asyncpg.Connection) -> None:
    await fill_ledger(db, 120, START, 4)
    await sign_in(client, "victor")
    every_date = "from=2024-05-01&to=2024-05-04"
    cases = [
        (every_date, "true"),
        ("from=2024-05-02&to=2024-05-03", "business_date BETWEEN '2024-05-02' AND '2024-05-03'"),
        (f"{every_date}&merchant_id=QC00000002", "merchant_id = 'QC00000002'"),
        (f"{every_date}&channel=WECHATPAY", "channel = 'WECHATPAY'"),
        (f"{every_date}&recon_status=amount_mismatch", "recon_status = 'amount_mismatch'"),
        (f"{every_date}&order_id=O0000042", "order_id = 'O0000042'"),
        (
            f"{every_date}&merchant_id=QC00000001&channel=ALIPAY&recon_status=matched",
            "merchant_id = 'QC00000001' AND channel = 'ALIPAY' AND recon_status = 'matched'",
        ),
    ]
    everything = await expected(db, "true")
    assert len(everything) == 120
    for query, where in cases:
        rows = await all_rows(client, f"/console/ledger?{query}")
        want = await expected(db, where)
        assert rows == want, query
        assert want and (len(want) < len(everything) or where == "true"), query


async def test_ledger_keyset_pages_return_every_row_exactly_once_in_report_order(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await fill_ledger(db, 137, START, 3)
    await sign_in(client, "victor")

    first, link = await page_rows(client, "/console/ledger?from=2024-05-01&to=2024-05-03")
    rows = await all_rows(client, "/console/ledger?from=2024-05-01&to=2024-05-03")

    assert len(first) == 50 and link is not None and "after=" in link
    assert rows == await expected(db, "true")
    assert len(rows) == len(set(rows)) == 137


async def test_ledger_csv_is_byte_for_byte_the_export_for_dates_and_merchant(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    # Enough rows for many streamed chunks (the pipe's backpressure path), with formula-like order ids.
    await fill_ledger(db, 6000, START, 5)
    await sign_in(client, "victor")

    for query, merchant in (("", None), ("&merchant_id=QC00000003", "QC00000003")):
        response = await client.get(f"/console/ledger.csv?from=2024-05-01&to=2024-05-03{query}")
        body = await response.read()
        out = io.StringIO()
        count = await export_report(
            pool, "ledger", out, date_from=date(2024, 5, 1), date_to=date(2024, 5, 3), merchant_id=merchant
        )

        assert response.status == 200
        assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert 'filename="ledger_2024-05-01_2024-05-03.csv"' in response.headers["Content-Disposition"]
        assert body == out.getvalue().encode("utf-8")
        assert body.count(b"\n") == count + 1 and count > 1000
        assert b"'=HYPERLINK" in body


async def test_ledger_csv_with_extra_filters_is_the_export_narrowed_to_those_rows(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    await fill_ledger(db, 300, START, 2)
    await sign_in(client, "victor")
    out = io.StringIO()
    await export_report(pool, "ledger", out, date_from=START, date_to=START + timedelta(days=1))
    header, *lines = out.getvalue().splitlines(keepends=True)
    columns = header.rstrip("\n").split(",")
    channel, status = columns.index("channel"), columns.index("recon_status")

    response = await client.get(
        "/console/ledger.csv?from=2024-05-01&to=2024-05-02&channel=UNIONPAY&recon_status=matched"
    )
    body = (await response.read()).decode()

    wanted = [line for line in lines if line.split(",")[channel] == "UNIONPAY" and line.split(",")[status] == "matched"]
    assert body == header + "".join(wanted)
    assert len(wanted) > 10


async def test_ledger_bad_filters_are_a_400_page_naming_each_problem(client: TestClient[Any, Any]) -> None:
    await sign_in(client, "victor")

    response = await client.get("/console/ledger?from=yesterday&channel=PAYPAL&recon_status=odd")
    html = unescape(await response.text())
    reversed_range = await client.get("/console/ledger?from=2024-05-03&to=2024-05-01")
    too_long = await client.get("/console/ledger?from=2020-01-01&to=2024-01-01")
    damaged = await client.get("/console/ledger?after=bm90LWEtY3Vyc29y")

    assert response.status == 400
    for words in ("'from' must be a date", "channel must be one of", "recon_status must be one of"):
        assert words in html
    assert (reversed_range.status, too_long.status, damaged.status) == (400, 400, 400)
    assert "page link is damaged" in await damaged.text()


async def test_ledger_empty_result_says_what_to_do(client: TestClient[Any, Any]) -> None:
    await sign_in(client, "victor")

    html = await (await client.get("/console/ledger?from=2001-01-01&to=2001-01-02")).text()

    assert 'data-test="empty-ledger"' in html
    assert "Widen the date range" in html


async def test_ledger_page_queries_use_the_console_indexes(db: asyncpg.Connection) -> None:
    from ottrecon.console.filters import DateRange, LedgerFilter
    from ottrecon.reconciliation.ledger_pages import ledger_query

    await fill_ledger(db, 20000, START, 30)
    await db.execute("ANALYZE ledger")
    cases = {
        "ledger_keyset_idx": LedgerFilter(DateRange(START, START + timedelta(days=29))),
        "ledger_merchant_keyset_idx": LedgerFilter(DateRange(START, START + timedelta(days=29)), "QC00000002"),
        "ledger_order_id_idx": LedgerFilter(DateRange(START, START + timedelta(days=29)), order_id="O0000042"),
        "ledger_status_keyset_idx": LedgerFilter(
            DateRange(START, START + timedelta(days=29)), recon_status="amount_mismatch"
        ),
    }
    for index, f in cases.items():
        for after in (None, (START + timedelta(days=3), "QC00000002", "O0000100")):
            sql, args = ledger_query(f.selection(), after, 51)
            plan = await db.fetch(f"EXPLAIN {sql}", *args)
            text = "\n".join(row[0] for row in plan)
            assert index in text and "Seq Scan" not in text, text
            if index != "ledger_order_id_idx":  # one order id is a row or two: sorting them costs nothing
                assert "Sort" not in text, text


async def test_ledger_csv_abandoned_by_the_browser_stops_the_export(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await fill_ledger(db, 20000, START, 2)
    await sign_in(client, "victor")
    count_connections = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    baseline = await db.fetchval(count_connections)

    response = await client.get("/console/ledger.csv?from=2024-05-01&to=2024-05-02")
    assert (await response.content.read(1000)).startswith(b"merchant_id,order_id,")
    response.close()

    # The export's private connection goes away once the thread notices: nothing keeps running or leaks.
    for _ in range(100):
        if await db.fetchval(count_connections) <= baseline:
            break
        await asyncio.sleep(0.1)
    assert await db.fetchval(count_connections) <= baseline
    assert (await client.get("/console/ledger")).status == 200
