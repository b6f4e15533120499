"""Statement import from the console: upload, import, reconcile, and the differences it produced."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from ottpay.keys import MerchantKeys
from ottrecon.db import fetch_one
from tests.conftest import MERCHANT
from tests.console.support import create_order, deliver, next_link, reconcile, sign_in, today

HEADER = "merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n"


def upload(token: str, content: str, name: str = "day.csv", **fields: str) -> FormData:
    """The statement form as a browser sends it: the CSRF token first, then the options and the file."""
    form = FormData()
    form.add_field("csrf_token", token)
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("file", content.encode(), filename=name, content_type="text/csv")
    return form


async def three_paid_orders(db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys) -> str:
    """SA, SB and SC paid today; returns a statement listing SA as paid, SC for another amount, an unknown SX,
    and nothing for SB."""
    for order_id, amount in (("SA", 1000), ("SB", 2000), ("SC", 3000)):
        await create_order(db, order_id, amount)
        await deliver(pool, merchants, order_id, amount, today())
    await reconcile(pool)
    day = today().isoformat()
    return HEADER + "".join(
        f"{MERCHANT},{order_id},AL{order_id},{amount},0,0,0,{day} 12:00:00\n"
        for order_id, amount in (("SA", 1000), ("SC", 3100), ("SX", 500))
    )


async def test_statement_upload_imports_reconciles_and_shows_the_differences(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys
) -> None:
    statement = await three_paid_orders(db, pool, merchants)
    token = await sign_in(client, "fiona")

    response = await client.post("/console/statements", data=upload(token, statement))
    html = await response.text()
    import_id = await db.fetchval("SELECT id FROM statement_imports")

    assert response.status == 200 and response.url.path == f"/console/statements/{import_id}"
    differences = dict(re.findall(r'data-test="difference-row" data-order="([^"]+)" data-status="([^"]+)"', html))
    assert differences == {"SB": "not_in_statement", "SC": "amount_differs", "SX": "not_in_ledger"}
    assert await db.fetchval("SELECT file_name FROM statement_imports") == "day.csv"
    assert 'data-test="notice"' in html
    listing = await (await client.get("/console/statements")).text()
    assert f'data-import-id="{import_id}"' in listing


async def test_statement_uploaded_twice_is_stored_once(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys
) -> None:
    statement = await three_paid_orders(db, pool, merchants)
    token = await sign_in(client, "fiona")

    first = await client.post("/console/statements", data=upload(token, statement))
    again = await client.post("/console/statements", data=upload(token, statement, name="renamed.csv"))

    assert first.url.path == again.url.path
    assert "imported before" in await again.text()
    assert await db.fetchval("SELECT count(*) FROM statement_imports") == 1


async def test_bad_statement_imports_nothing_and_lists_every_problem(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    token = await sign_in(client, "fiona")
    bad = HEADER + f"{MERCHANT},,AL1,1000,0,0,0,2024-05-01 12:00:00\n{MERCHANT},O2,AL2,12.50,0,0,0,yesterday\n"

    response = await client.post("/console/statements", data=upload(token, bad))
    html = await response.text()

    assert response.status == 422
    assert 'data-test="import-problems"' in html
    assert "line 2: order_id is empty" in html and "line 3" in html
    assert await db.fetchval("SELECT count(*) FROM statement_imports") == 0


async def test_statement_with_a_column_mapping_and_decimal_amounts_is_imported(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    token = await sign_in(client, "fiona")
    content = f"Merchant ID,Order No,Amount,Paid At\n{MERCHANT},ZZ1,12.50,2024-05-01 10:00:00\n"
    fields = {
        "amounts": "decimal",
        "columns": "merchant_id=Merchant ID,order_id=Order No,amount=Amount,txn_time=Paid At",
        "period_from": "2024-05-01",
        "period_to": "2024-05-31",
    }

    response = await client.post("/console/statements", data=upload(token, content, **fields))
    row = await fetch_one(
        db, "SELECT s.amount, i.period_end FROM statement_lines s JOIN statement_imports i ON i.id = s.import_id"
    )

    assert response.status == 200
    assert row["amount"] == 1250 and row["period_end"].isoformat() == "2024-05-31"
    assert 'data-order="ZZ1" data-status="not_in_ledger"' in await response.text()


async def test_statement_without_lines_is_imported_for_the_merchants_named_in_the_form(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    token = await sign_in(client, "fiona")
    period = {"period_from": "2024-05-01", "period_to": "2024-05-01"}

    refused = await client.post("/console/statements", data=upload(token, HEADER, **period))
    assert refused.status == 422
    assert "no merchant:" in await refused.text()

    response = await client.post(
        "/console/statements", data=upload(token, HEADER, merchants=f" {MERCHANT} ,", **period)
    )

    assert response.status == 200
    assert await db.fetchval("SELECT merchant_ids FROM statement_imports") == [MERCHANT]


async def test_statement_upload_over_the_size_limit_is_refused(
    client: TestClient[Any, Any], db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ottrecon.console.upload.MAX_UPLOAD_BYTES", 100)
    token = await sign_in(client, "fiona")

    response = await client.post("/console/statements", data=upload(token, HEADER + "x" * 200))

    assert response.status == 413
    assert "File too large" in await response.text()
    assert await db.fetchval("SELECT count(*) FROM statement_imports") == 0


async def test_statement_upload_without_a_file_asks_for_one(client: TestClient[Any, Any]) -> None:
    token = await sign_in(client, "fiona")
    form = FormData()
    form.add_field("csrf_token", token)
    form.add_field("amounts", "cents")
    form.add_field("file", b"", filename="", content_type="text/csv")

    response = await client.post("/console/statements", data=form)

    assert response.status == 422
    assert "choose a CSV file" in await response.text()


async def test_statement_upload_with_its_token_after_the_file_is_forbidden(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    token = await sign_in(client, "fiona")
    form = FormData()
    form.add_field("file", (HEADER + f"{MERCHANT},A,B,1,0,0,0,2024-05-01\n").encode(), filename="a.csv")
    form.add_field("csrf_token", token)

    response = await client.post("/console/statements", data=form)

    assert response.status == 403
    assert await db.fetchval("SELECT count(*) FROM statement_imports") == 0


async def test_statement_import_page_for_an_unknown_import_is_a_404_page(client: TestClient[Any, Any]) -> None:
    await sign_in(client, "victor")

    response = await client.get("/console/statements/777")

    assert response.status == 404
    assert "No such statement import" in await response.text()


async def test_statement_differences_page_through_every_row_exactly_once(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    token = await sign_in(client, "fiona")
    lines = "".join(f"{MERCHANT},X{n:03d},,{100 + n},0,0,0,2024-05-0{1 + n % 3} 12:00:00\n" for n in range(73))

    response = await client.post("/console/statements", data=upload(token, HEADER + lines))
    seen: list[str] = []
    link: str | None = str(response.url.relative())
    while link:
        html = await (await client.get(link)).text()
        seen += re.findall(r'data-test="difference-row" data-order="([^"]+)"', html)
        link = next_link(html)

    assert sorted(seen) == [f"X{n:03d}" for n in range(73)]
    assert len(seen) == len(set(seen))
    assert await db.fetchval("SELECT count(*) FROM ledger WHERE statement_status = 'not_in_ledger'") == 73
