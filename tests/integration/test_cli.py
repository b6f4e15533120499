"""The `ottrecon` command as an operator runs it: a real subprocess against real services."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from ottpay.envelope import open_envelope
from ottpay.finish_time import parse_finish_time
from ottpay.keys import MerchantKeys
from tests.conftest import MERCHANT, NEW_KEY, OLD_KEY, OTHER_KEY
from tests.integration.support import drain, make_callback, receiver, worker_settings

OTTRECON = str(Path(sys.executable).with_name("ottrecon"))


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    base = {"PATH": os.environ.get("PATH", ""), "LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        OTTRECON, *args, env={**base, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_worker_start_names_every_missing_variable_at_once() -> None:
    code, _, err = await run_cli("worker", env={})
    assert code == 2
    for name in ("DATABASE_URL", "REDIS_URL", "OTTPAY_MERCHANTS"):
        assert name in err


async def test_invalid_merchant_keys_are_reported_without_echoing_them() -> None:
    secret = "ABCDEF0123456789"
    env = {"DATABASE_URL": "postgresql://x/y", "REDIS_URL": "redis://x", "OTTPAY_MERCHANTS": f"BAD-ID={secret},X"}
    code, out, err = await run_cli("worker", env=env)
    assert code == 2
    assert "OTTPAY_MERCHANTS" in err
    assert secret not in err + out


async def test_migrate_then_export_payments_as_csv_in_integer_cents(
    database_url: str, redis_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    code, _, err = await run_cli("migrate", env={"DATABASE_URL": database_url})
    assert code == 0, err
    async with receiver(redis_url) as client:
        for body in (make_callback("EXP1", "1999", tip="1"), make_callback("EXP2", "5", merchant_id=MERCHANT)):
            assert (await client.post("/ottpay/callback", json=body)).status == 200
    await drain(worker_settings(database_url, redis_url, merchants))

    code, out, err = await run_cli("export", "payments", "--format", "csv", env={"DATABASE_URL": database_url})
    assert code == 0, err
    # The export lists payments in the order they were recorded; the worker writes two jobs' batches concurrently
    # (decision 0041), so which of the two was recorded first is not fixed: compare them by order id.
    rows = sorted(csv.DictReader(io.StringIO(out)), key=lambda r: r["order_id"])
    assert [(r["order_id"], r["status"], r["amount"], r["tip"]) for r in rows] == [
        ("EXP1", "paid", "1999", "1"),
        ("EXP2", "paid", "5", "0"),
    ]
    assert {"merchant_id", "bizpay_order_id", "finish_time"} <= set(rows[0])
    assert rows[0]["finish_time"] == "20200416050429"


async def test_export_rejected_and_replay_rejected_from_the_command_line(
    database_url: str, redis_url: str, merchants: MerchantKeys, db: asyncpg.Connection
) -> None:
    # A spreadsheet formula in a claimed merchant id must not reach finance's spreadsheet as one.
    hostile = {**make_callback("REJ1"), "merchant_id": "=HYPERLINK(1)"}
    unknown = make_callback("REJ2", merchant_id="NB00000001", key=OTHER_KEY)
    async with receiver(redis_url) as client:
        for body in (hostile, unknown):
            assert (await client.post("/ottpay/callback", json=body)).status == 200
    await drain(worker_settings(database_url, redis_url, merchants))

    code, out, err = await run_cli("export", "rejected", "--format", "csv", env={"DATABASE_URL": database_url})
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {(r["merchant_id"], r["reason"]) for r in rows} == {
        ("'=HYPERLINK(1)", "unknown_merchant"),
        ("NB00000001", "unknown_merchant"),
    }
    assert all(r["received_at"] for r in rows)

    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY},NB00000001={OTHER_KEY}",
    }
    code, out, err = await run_cli("replay-rejected", env=env)
    assert code == 0, err
    assert "recorded 1" in out and "still rejected 1" in out
    assert await db.fetchval("SELECT amount FROM payments WHERE merchant_id = 'NB00000001'") == 100


async def test_make_callback_prints_a_callback_that_verifies_with_the_current_key() -> None:
    env = {"OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY},{MERCHANT}={NEW_KEY}"}
    code, out, err = await run_cli(
        "make-callback", "--merchant", MERCHANT, "--order-id", "CURL1", "--amount", "250", env=env
    )
    assert code == 0, err
    body = json.loads(out)
    # The first listed key is the one OTT Pay holds, so it seals the sample (decision 0029).
    data = open_envelope(body["data"], body["md5"], OLD_KEY, body["merchant_id"])
    assert (data["order_id"], data["amount"], data["merchant_id"]) == ("CURL1", "250", MERCHANT)
    assert OLD_KEY not in out and NEW_KEY not in out
    # Its finish_time reads as now the way OTT Pay's does (zone-less: Beijing time, PROTOCOL.md section 4),
    # so a deployment tested with it shows no skew and books the payment today.
    finish_time = parse_finish_time(data["finish_time"])
    assert finish_time is not None
    assert abs((finish_time - datetime.now(UTC)).total_seconds()) < 60


async def test_make_callback_refuses_a_non_integer_amount() -> None:
    env = {"OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY}"}
    code, _, err = await run_cli(
        "make-callback", "--merchant", MERCHANT, "--order-id", "X", "--amount", "2.50", env=env
    )
    assert code == 2
    assert "digits" in err or "cents" in err
