"""Importing settlement statements into Postgres, and the simulator's statement imported end to end."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ottpay.keys import MerchantKeys
from ottrecon.errors import DatabaseUnavailable
from ottrecon.reconciliation.layouts import ImportReport, StatementError, StatementLayout
from ottrecon.reconciliation.statements import CHUNK_LINES, import_statement
from simulator.app import create_app as create_sim
from tests.conftest import MERCHANT
from tests.integration.stack import API_TOKEN, customer_pays, running_stack, sim_settings

TORONTO = ZoneInfo("America/Toronto")
BEIJING = ZoneInfo("Asia/Shanghai")
HEADER = "merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n"
MAY_1 = "QC1,A1,AL1,1000,0,20,0,2024-05-01 09:00:00\n"
MAY_2 = "QC1,A2,AL2,2000,100,42,0,2024-05-02 10:00:00\n"
MAY_3 = "QC2,A3,WX3,3000,0,60,500,2024-05-03 23:59:00\n"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as created:
        yield created


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


async def test_import_statement_stores_lines_and_the_import(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write(tmp_path, "may.csv", HEADER + MAY_1 + MAY_2 + MAY_3)

    report = await import_statement(pool, path, StatementLayout())

    expected = ImportReport(report.import_id, False, 3, 3, 0, 0, date(2024, 5, 1), date(2024, 5, 3), ("QC1", "QC2"))
    assert report == expected
    imported = await db.fetchrow("SELECT * FROM statement_imports")
    assert imported is not None and imported["id"] == report.import_id
    assert (imported["file_name"], imported["file_sha256"]) == (
        "may.csv",
        hashlib.sha256(path.read_bytes()).hexdigest(),
    )
    assert (imported["merchant_ids"], imported["line_count"]) == (["QC1", "QC2"], 3)
    rows = await db.fetch("SELECT * FROM statement_lines ORDER BY id")
    assert [(r["line_no"], r["order_id"], r["amount"], r["tip"], r["fee"], r["refund"]) for r in rows] == [
        (2, "A1", 1000, 0, 20, 0),
        (3, "A2", 2000, 100, 42, 0),
        (4, "A3", 3000, 0, 60, 500),
    ]
    assert rows[2]["txn_time"] == datetime(2024, 5, 3, 23, 59, tzinfo=TORONTO)
    assert (rows[2]["txn_time_raw"], rows[2]["business_date"]) == ("2024-05-03 23:59:00", date(2024, 5, 3))


async def test_import_statement_same_file_twice_is_already_imported(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write(tmp_path, "may.csv", HEADER + MAY_1 + MAY_2)
    first = await import_statement(pool, path, StatementLayout())

    again = await import_statement(pool, write(tmp_path, "copy.csv", path.read_bytes()), StatementLayout())

    assert (first.already_imported, first.lines_stored) == (False, 2)
    assert (again.import_id, again.already_imported, again.lines_read, again.lines_stored) == (None, True, 2, 0)
    assert await db.fetchval("SELECT count(*) FROM statement_imports") == 1
    assert await db.fetchval("SELECT count(*) FROM statement_lines") == 2


async def test_import_statement_overlapping_files_keep_every_line_and_count_the_unchanged(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    first = await import_statement(pool, write(tmp_path, "a.csv", HEADER + MAY_1 + MAY_2), StatementLayout())
    # The second file repeats MAY_2 in another layout, with decimal amounts and a BOM.
    mapped = StatementLayout.from_spec(
        "merchant_id=Merchant,order_id=Order,bizpay_order_id=Channel Id,amount=Amount,tip=Tip,fee=Fee,"
        "refund=Refund,txn_time=Time",
        amounts="decimal",
    )
    second_file = "Time,Merchant,Order,Channel Id,Amount,Tip,Fee,Refund\r\n"
    second_file += "20240502100000,QC1,A2,AL2,20.00,1.00,0.42,0\r\n2024-05-03 23:59:00,QC2,A3,WX3,30,0,0.6,5.00\r\n"
    second = await import_statement(pool, write(tmp_path, "b.csv", "\ufeff" + second_file), mapped)

    # Every line is kept; which one counts is decided at reconciliation (the later statement supersedes).
    assert (second.lines_read, second.lines_stored, second.unchanged_lines, second.repeated_payments) == (2, 2, 1, 0)
    assert (second.period_start, second.period_end) == (date(2024, 5, 2), date(2024, 5, 3))
    rows = await db.fetch("SELECT import_id, order_id, amount, refund FROM statement_lines ORDER BY id")
    assert [tuple(r.values()) for r in rows] == [
        (first.import_id, "A1", 1000, 0),
        (first.import_id, "A2", 2000, 0),
        (second.import_id, "A2", 2000, 0),
        (second.import_id, "A3", 3000, 500),
    ]


async def test_import_statement_bad_file_stores_nothing(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # The bad line comes after more than a chunk of good ones: nothing at all may be stored.
    good = "".join(f"QC1,G{n},,100,0,2,0,2024-05-01 12:00:00\n" for n in range(CHUNK_LINES + 10))
    bad_amount = write(tmp_path, "bad.csv", HEADER + good + "QC1,B1,,1.00,0,0,0,2024-05-01 12:00:00\n")
    not_utf8 = write(tmp_path, "latin1.csv", (HEADER + MAY_1).encode() + "QC1,Ä1,,1,0,0,0,\n".encode("latin-1"))

    with pytest.raises(StatementError) as bad:
        await import_statement(pool, bad_amount, StatementLayout())
    with pytest.raises(StatementError) as latin1:
        await import_statement(pool, not_utf8, StatementLayout())

    assert bad.value.problems == (f"line {CHUNK_LINES + 12}: amount '1.00' is not integer cents like 1250",)
    assert latin1.value.problems == ("line 3: not UTF-8 text",)
    assert await db.fetchval("SELECT count(*) FROM statement_imports") == 0
    assert await db.fetchval("SELECT count(*) FROM statement_lines") == 0


async def test_import_statement_more_than_a_chunk_is_stored_whole(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    lines = "".join(f"QC1,C{n},,{n + 1},0,0,0,2024-05-01 12:00:00\n" for n in range(2 * CHUNK_LINES + 1))

    report = await import_statement(pool, write(tmp_path, "big.csv", HEADER + lines + lines), StatementLayout())

    distinct = 2 * CHUNK_LINES + 1  # every line appears twice in the file: each payment is listed (settled) twice
    counts = (report.lines_read, report.lines_stored, report.unchanged_lines, report.repeated_payments)
    assert counts == (2 * distinct, 2 * distinct, 0, distinct)
    total = await db.fetchrow("SELECT count(*), sum(amount), max(line_no) FROM statement_lines")
    assert total is not None
    assert tuple(total.values()) == (2 * distinct, 2 * sum(range(1, distinct + 1)), 2 * distinct + 1)


async def test_import_statement_undated_lines_get_the_period_start(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    path = write(tmp_path, "undated.csv", HEADER + "QC1,U1,,700,0,0,0,\n" + MAY_2)

    with pytest.raises(StatementError, match="no period"):
        await import_statement(pool, write(tmp_path, "none.csv", HEADER + "QC1,U1,,700,0,0,0,\n"), StatementLayout())
    report = await import_statement(pool, path, StatementLayout(), period=(date(2024, 4, 30), date(2024, 5, 31)))

    assert (report.period_start, report.period_end) == (date(2024, 4, 30), date(2024, 5, 31))
    rows = await db.fetch("SELECT order_id, business_date, txn_time FROM statement_lines ORDER BY id")
    assert [tuple(r.values())[:2] for r in rows] == [("U1", date(2024, 4, 30)), ("A2", date(2024, 5, 2))]
    assert rows[0]["txn_time"] is None


async def test_import_statement_database_down_is_unavailable(tmp_path: Path, unused_tcp_port: int) -> None:
    path = write(tmp_path, "may.csv", HEADER + MAY_1)
    async with asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/x", min_size=0) as down:
        with pytest.raises(DatabaseUnavailable):
            await import_statement(down, path, StatementLayout())


async def test_simulator_statement_imports_with_its_injected_differences(
    database_url: str, redis_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    expected: dict[str, tuple[int, int, int]] = {}  # order id -> amount, tip, refund
    async with running_stack(database_url, redis_url) as stack:
        for n, amount in enumerate((1000, 2000, 3000)):
            _, payment = await stack.pay(
                f"k-st-{n}", kind="PASSIVEPAY", amount=amount, auth_code=f"2834567890123456{n}"
            )
            assert payment["status"] == "paid", payment
            expected[payment["id"]] = (amount, 0, 0)
        _, active = await stack.pay("k-st-a", kind="ACTIVEPAY", amount=2500, tip=100)
        await customer_pays(stack.sim, active["id"])
        expected[active["id"]] = (2500, 100, 0)
        refunded = next(iter(expected))
        response = await stack.api.post(
            f"/api/payments/{refunded}/refunds",
            json={"amount": 300},
            headers={"Authorization": f"Bearer {API_TOKEN}", "Idempotency-Key": "k-st-r"},
        )
        assert response.status == 201, await response.text()
        expected[refunded] = (1000, 0, 300)
        today = datetime.now(TORONTO).date()
        window = {"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1))}
        query = window | {"missing": "1", "extra": "1", "amount_differs": "1", "seed": "7"}
        statement = await stack.sim.get("/sim/statement.csv", params=query)
        body = await statement.read()
        again = await (await stack.sim.get("/sim/statement.csv", params=query)).read()
        tomorrow = {"from": window["to"], "to": window["to"]}
        later = await (await stack.sim.get("/sim/statement.csv", params=tomorrow)).text()
        sim_orders = {o["order_id"]: o for o in (await (await stack.sim.get("/sim/orders")).json())["orders"]}

    assert (statement.status, statement.content_type) == (200, "text/csv")
    assert body == again  # the seed alone decides the differences
    assert later == HEADER  # nothing was paid tomorrow

    async with asyncpg.create_pool(database_url, min_size=1, max_size=1) as pool:
        report = await import_statement(pool, write(tmp_path, "sim.csv", body), StatementLayout())

    [missing], [extra], [differs] = (
        _order_ids(statement.headers[f"X-Sim-{kind}"]) for kind in ("Missing", "Extra", "Amount-Differs")
    )
    assert missing in expected and differs in expected and missing != differs
    assert extra not in expected and extra not in sim_orders
    assert (report.lines_read, report.lines_stored, report.merchant_ids) == (4, 4, (MERCHANT,))
    rows = {r["order_id"]: r for r in await db.fetch("SELECT * FROM statement_lines ORDER BY amount")}
    assert list(rows) == sorted(rows, key=lambda order_id: rows[order_id]["amount"])
    assert set(rows) == set(expected) - {missing} | {extra}
    for order_id, (amount, tip, refund) in expected.items():
        if order_id == missing:
            continue
        row, order = rows[order_id], sim_orders[order_id]
        changed = row["amount"] - amount
        assert 1 <= changed <= 100 if order_id == differs else changed == 0
        assert (row["tip"], row["refund"], row["fee"]) == (tip, refund, (row["amount"] + tip) * 2 // 100)
        assert (row["merchant_id"], row["bizpay_order_id"]) == (MERCHANT, order["bizpay_order_id"])
        # The gateway's trade_time is Beijing wall time; the statement states the same instant in Toronto time.
        assert row["txn_time"] == datetime.strptime(order["trade_time"], "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)
        assert row["business_date"] == row["txn_time"].astimezone(TORONTO).date()
    assert window["from"] <= str(rows[extra]["business_date"]) <= window["to"]


async def test_simulator_statement_bad_query_lists_every_problem(merchants: MerchantKeys) -> None:
    async with TestClient(TestServer(create_sim(sim_settings(merchants)))) as sim:
        response = await sim.get(
            "/sim/statement.csv",
            params={"from": "2024-02-30", "merchant_id": "NOBODY", "missing": "-1", "extra": "x", "seed": "1.5"},
        )
        reversed_dates = await sim.get("/sim/statement.csv", params={"from": "2024-05-02", "to": "2024-05-01"})

        assert response.status == 400
        assert (await response.json())["problems"] == [
            "from must be a date YYYY-MM-DD",
            "to must be a date YYYY-MM-DD",
            "merchant_id is not a configured merchant",
            "missing must be an integer from 0 to 100",
            "extra must be an integer from 0 to 100",
            f"seed must be an integer from {-(2**63)} to {2**63 - 1}",
        ]
        assert (reversed_dates.status, (await reversed_dates.json())["problems"]) == (
            400,
            ["from must not be after to"],
        )


def _order_ids(header: str) -> list[str]:
    return [key.split("/", 1)[1] for key in header.split(",") if key]


async def test_import_statement_same_bytes_for_another_period_or_merchants_is_an_import_of_its_own(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # Two quiet days: byte-identical files (a header, no lines), told apart only by the period they are for.
    path = write(tmp_path, "quiet.csv", HEADER)
    may_1, may_2 = (date(2024, 5, 1), date(2024, 5, 1)), (date(2024, 5, 2), date(2024, 5, 2))
    first = await import_statement(pool, path, StatementLayout(), period=may_1, merchants=["QC1"])

    # Before: "already imported" (the bytes alone were the key), and no import covered May 2.
    second = await import_statement(pool, path, StatementLayout(), period=may_2, merchants=["QC1"])
    other = await import_statement(pool, path, StatementLayout(), period=may_2, merchants=["QC2"])
    again = await import_statement(pool, path, StatementLayout(), period=may_2, merchants=["QC1"])

    assert not first.already_imported and not second.already_imported and not other.already_imported
    assert (again.import_id, again.already_imported) == (None, True)
    spans = await db.fetch("SELECT period_start, merchant_ids FROM statement_imports ORDER BY id")
    assert [(r["period_start"].day, r["merchant_ids"]) for r in spans] == [(1, ["QC1"]), (2, ["QC1"]), (2, ["QC2"])]


async def test_import_statement_naming_hundreds_of_merchants_is_stored(
    pool: asyncpg.Pool, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # Found by a reviewer: with the merchant list itself in the import's unique key, a btree entry over 2704 bytes
    # failed the import (ProgramLimitExceededError, a 500 on the console); the key now holds its digest.
    # Ids that do not compress (Postgres compresses a long index entry before it measures it).
    merchants = sorted(hashlib.sha256(str(n).encode()).hexdigest()[:16].upper() for n in range(250))
    lines = "".join(f"{m},O{n},AL{n},100,0,1,0,2024-05-01 12:00:00\n" for n, m in enumerate(merchants))
    path = write(tmp_path, "many.csv", HEADER + lines)

    report = await import_statement(pool, path, StatementLayout())
    again = await import_statement(pool, path, StatementLayout())
    quiet = await import_statement(
        pool, write(tmp_path, "quiet.csv", HEADER), StatementLayout(), period=(date(2024, 5, 2), date(2024, 5, 2)),
        merchants=[hashlib.sha256(b"long").hexdigest() * 100],
    )  # fmt: skip

    assert (report.lines_stored, len(report.merchant_ids), again.already_imported) == (250, 250, True)
    assert len(quiet.merchant_ids[0]) == 6400
    assert await db.fetchval("SELECT count(*) FROM statement_imports") == 2
