"""Payments and finance commands as an operator runs them: `ottrecon pay|refund|reconcile|alerts|export`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import asyncpg

from tests.conftest import MERCHANT
from tests.integration.stack import OPERATOR, running_stack
from tests.integration.test_cli import run_cli


async def test_pay_and_refund_from_the_command_line(database_url: str, redis_url: str) -> None:
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "OTTPAY_OPERATORS": f"{MERCHANT}={OPERATOR}"}
    async with running_stack(database_url, redis_url):
        code, out, err = await run_cli(
            "pay", "--merchant", MERCHANT, "--kind", "PASSIVEPAY", "--biz-type", "WECHATPAY",
            "--amount", "2599", "--auth-code", "134567890123456781", "--idempotency-key", "cli-1", env=env,
        )  # fmt: skip
        assert code == 0, err
        payment = json.loads(out)
        assert (payment["status"], payment["amount"], payment["biz_type"]) == ("paid", 2599, "WECHATPAY")
        code, out, err = await run_cli("refund", payment["id"], "--amount", "599", env=env)
        assert code == 0, err
        refund = json.loads(out)

    assert (refund["status"], refund["amount"], refund["payment_id"]) == ("succeeded", 599, payment["id"])


async def test_pay_refuses_an_unconfigured_merchant_with_a_clear_error(database_url: str, redis_url: str) -> None:
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "OTTPAY_OPERATORS": f"{MERCHANT}={OPERATOR}"}
    code, _, err = await run_cli(
        "pay", "--merchant", "NOPE000001", "--kind", "ACTIVEPAY", "--biz-type", "ALIPAY", "--amount", "100", env=env
    )
    assert code == 1
    assert "merchant_id" in err


async def test_pay_and_refund_need_none_of_the_api_process_settings(database_url: str, redis_url: str) -> None:
    # The command line acts with the operator's own database access: the api's bearer tokens and the console's
    # users are none of its business (it used to fake a token and then refuse to run over a console typo).
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OTTPAY_OPERATORS": f"{MERCHANT}={OPERATOR}",
        "OTTRECON_API_TOKENS": "short",
        "OTTRECON_CONSOLE_USERS": "not a user entry",
    }
    code, _, err = await run_cli(
        "pay", "--merchant", "NOPE000001", "--kind", "ACTIVEPAY", "--biz-type", "ALIPAY", "--amount", "100", env=env
    )
    assert (code, "OTTRECON" in err) == (1, False), err
    code, _, err = await run_cli("refund", "NOSUCHPAYMENT", "--amount", "100", env=env)
    assert (code, "OTTRECON" in err) == (1, False), err
    code, _, err = await run_cli("pay", "--merchant", MERCHANT, "--kind", "ACTIVEPAY", "--biz-type", "ALIPAY",
                                 "--amount", "100", env={"OTTPAY_OPERATORS": "nonsense"})  # fmt: skip
    assert code == 2 and all(name in err for name in ("DATABASE_URL", "REDIS_URL", "OTTPAY_OPERATORS")), err


async def test_reconcile_alerts_and_ledger_export_from_the_command_line(
    database_url: str, redis_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": database_url}
    # An orphan payment: a verified callback for an order this system never created.
    await db.execute(
        "INSERT INTO payments (merchant_id, order_id, status, amount, tip, source) "
        "VALUES ($1, 'ORPHAN1', 'paid', 4200, 0, 'callback')",
        MERCHANT,
    )
    code, out, err = await run_cli("reconcile", "--all", env=env)
    assert code == 0, err
    assert "alerts opened 1" in out

    code, out, err = await run_cli("alerts", "list", env=env)
    assert code == 0, err
    assert "orphan_payment" in out and "ORPHAN1" in out and "42.00 CAD" in out
    code, out, err = await run_cli("alerts", "list", env=env | {"OTTRECON_CURRENCY": "USD"})
    assert code == 0 and "42.00 USD" in out and "$" not in out, err
    code, _, err = await run_cli("alerts", "list", env=env | {"OTTRECON_CURRENCY": "dollars"})
    assert code == 2 and "OTTRECON_CURRENCY" in err
    alert_id = await db.fetchval("SELECT id FROM alerts")
    code, _, err = await run_cli("alerts", "resolve", str(alert_id), env=env)
    assert code != 0 and "note" in err
    code, out, err = await run_cli("alerts", "ack", str(alert_id), "--actor", "bob", "--note", "looking", env=env)
    assert code == 0 and "acknowledged" in out, err
    code, out, err = await run_cli(
        "alerts", "resolve", str(alert_id), "--actor", "bob", "--note", "refunded by hand", env=env
    )
    assert code == 0 and "resolved" in out, err
    events = await db.fetch("SELECT action, actor, note FROM alert_events ORDER BY id")
    assert [(e["action"], e["actor"]) for e in events] == [
        ("opened", "reconciler"), ("acknowledged", "bob"), ("resolved", "bob"),
    ]  # fmt: skip

    code, out, err = await run_cli("export", "ledger", "--merchant", MERCHANT, "--format", "csv", env=env)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["order_id"], r["recon_status"], r["received_amount"]) for r in rows] == [
        ("ORPHAN1", "orphan_payment", "4200")
    ]


async def test_reconcile_jobs_runs_batches_at_once_and_refuses_nonsense(
    database_url: str, db: asyncpg.Connection
) -> None:
    env = {"DATABASE_URL": database_url}
    await db.execute(
        "INSERT INTO payments (merchant_id, order_id, status, amount, tip, source) "
        "SELECT $1, 'ORPHAN' || i, 'paid', 100 * i, 0, 'callback' FROM generate_series(1, 30) AS i",
        MERCHANT,
    )
    for bad in (["--jobs", "0"], ["--jobs", "x"]):
        code, _, err = await run_cli("reconcile", *bad, env=env)
        assert code == 2 and "--jobs" in err, err
    code, _, err = await run_cli("reconcile", env=env | {"OTTRECON_RECONCILE_CONCURRENCY": "none"})
    assert code == 2 and "OTTRECON_RECONCILE_CONCURRENCY" in err, err
    assert await db.fetchval("SELECT count(*) FROM ledger") == 0
    code, out, err = await run_cli("reconcile", "--jobs", "3", env=env)
    assert code == 0 and "reconciled 30 key(s)" in out and "alerts opened 30" in out, (out, err)
    assert await db.fetchval("SELECT count(*) FROM ledger WHERE recon_status = 'orphan_payment'") == 30
    assert await db.fetchval("SELECT count(*) FROM recon_dirty") == 0


async def test_import_statement_from_the_command_line_is_idempotent(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    statement = tmp_path / "statement.csv"
    statement.write_text(
        "merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n"
        f"{MERCHANT},ST1,AL1,1000,0,20,0,2026-11-20 10:00:00\n"
    )
    env = {"DATABASE_URL": database_url}
    code, out, err = await run_cli("import-statement", str(statement), env=env)
    assert code == 0, err
    assert "imported 1 line(s)" in out
    code, out, err = await run_cli("import-statement", str(statement), env=env)
    assert code == 0 and "already imported" in out, err
    bad = tmp_path / "bad.csv"
    bad.write_text("merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\nX,Y,,12.5,0,0,0,\n")
    code, _, err = await run_cli("import-statement", str(bad), env=env)
    assert code == 2 and "line 2" in err
    assert await db.fetchval("SELECT count(*) FROM statement_lines") == 1


async def test_import_statement_of_a_day_without_settlements_names_its_merchants(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    quiet = tmp_path / "quiet.csv"
    quiet.write_text("merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n")
    env = {"DATABASE_URL": database_url}
    period = ["--from", "2026-11-20", "--to", "2026-11-20"]

    code, _, err = await run_cli("import-statement", str(quiet), *period, env=env)
    assert code == 2 and "no merchant:" in err and "--merchant MID" in err

    # Repeated or comma-separated, as the console's field takes them.
    code, out, err = await run_cli(
        "import-statement", str(quiet), *period, "--merchant", f"{MERCHANT}, QC9", "--merchant", "QC8", env=env
    )
    assert code == 0, err
    assert f"imported 0 line(s) (0 unchanged from earlier statements) for {MERCHANT}, QC8, QC9, 2026-11-20" in out
    assert await db.fetchval("SELECT merchant_ids FROM statement_imports") == sorted([MERCHANT, "QC8", "QC9"])

    # The next quiet day's file is the same bytes: an import of its own (for its own period), not "already imported".
    code, out, err = await run_cli(
        "import-statement", str(quiet), "--from", "2026-11-21", "--to", "2026-11-21", "--merchant", MERCHANT, env=env
    )
    assert code == 0 and f"for {MERCHANT}, 2026-11-21 to 2026-11-21" in out, err
    code, out, err = await run_cli(
        "import-statement", str(quiet), *period, "--merchant", f"QC8,QC9,{MERCHANT}", env=env
    )
    assert code == 0 and "already imported" in out, err
    assert await db.fetchval("SELECT count(*) FROM statement_imports") == 2
