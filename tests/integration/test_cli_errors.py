"""Operator errors end with one clear line on stderr and a documented exit code, never a traceback
(README "Exit codes": 1 the operation failed, 2 the command line or configuration is wrong)."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
from pathlib import Path

import asyncpg
import pytest

from ottrecon.cli import _parser, main
from tests.conftest import MERCHANT, OLD_KEY
from tests.integration.test_cli import run_cli


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SECRET = "pw-not-for-your-eyes"
DOWN_PG = f"postgresql://ottrecon:{SECRET}@127.0.0.1:{_closed_port()}/ottrecon"
DOWN_REDIS = f"redis://:{SECRET}@127.0.0.1:{_closed_port()}/0"
BAD_PG = f"ottrecon:{SECRET}@localhost/ottrecon"  # the scheme forgotten
BAD_REDIS = f"localhost:6379?password={SECRET}"
MERCHANTS = f"{MERCHANT}={OLD_KEY}"
OPERATORS = f"{MERCHANT}=1234567890"


def assert_one_message(err: str, command: str) -> None:
    """stderr holds one message from the command: a line `ottrecon COMMAND: …`, perhaps followed by indented
    details (check-config's and import-statement's lists of problems); apart from the JSON log lines, nothing
    else (no traceback)."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("{")]
    assert lines, err
    if lines[0].startswith("usage:"):  # argparse: the usage, then one line naming the wrong argument
        assert lines[-1].startswith(f"ottrecon {command}: error: argument"), err
        return
    assert lines[0].startswith(f"ottrecon {command}"), err
    assert all(line.startswith("  ") for line in lines[1:]), err
    assert "Traceback" not in err


def _env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OTTPAY_MERCHANTS": MERCHANTS,
        "OTTPAY_OPERATORS": OPERATORS,
        "OTTRECON_API_TOKENS": "ops:" + "t" * 32,
        "OTTRECON_CALLBACK_URL": "https://example.com/ottpay/callback",
        "LOG_LEVEL": "WARNING",
    }


DOWN = _env(DOWN_PG, DOWN_REDIS)
MALFORMED = _env(BAD_PG, BAD_REDIS)
PAY = ["pay", "--merchant", MERCHANT, "--kind", "ACTIVEPAY", "--biz-type", "ALIPAY", "--amount", "100"]

# Every subcommand that does its work and exits (web, worker, api and sim run until stopped and start while
# a server is down, by design), against servers that are down (1) and URLs that are not URLs (2).
CASES = [
    ("migrate", ["migrate"], DOWN, 1),
    ("migrate", ["migrate"], MALFORMED, 2),
    ("replay-rejected", ["replay-rejected"], DOWN, 1),
    ("replay-rejected", ["replay-rejected"], MALFORMED, 2),
    ("requeue-dead", ["requeue-dead"], DOWN, 1),
    ("requeue-dead", ["requeue-dead"], MALFORMED, 2),
    ("export", ["export", "payments"], DOWN, 1),
    ("export", ["export", "rejected"], MALFORMED, 2),
    ("export", ["export", "ledger"], DOWN, 1),
    ("export", ["export", "summary", "--from", "2024-02-30"], DOWN, 2),
    ("reconcile", ["reconcile"], DOWN, 1),
    ("reconcile", ["reconcile"], MALFORMED, 2),
    ("import-statement", ["import-statement", "/nonexistent/statement.csv"], DOWN, 2),
    ("import-statement", ["import-statement", "x.csv", "--from", "2024-99-01", "--to", "2024-01-01"], DOWN, 2),
    ("alerts", ["alerts", "list"], DOWN, 1),
    ("alerts", ["alerts", "ack", "1"], MALFORMED, 2),
    ("pay", PAY, DOWN, 1),
    ("pay", PAY, MALFORMED, 2),
    ("refund", ["refund", "1", "--amount", "100"], DOWN, 1),
    ("check-config", ["check-config"], DOWN, 1),
    ("make-callback", ["make-callback", "--merchant", MERCHANT, "--order-id", "X", "--amount", "1.5"], DOWN, 2),
    ("hash-password", ["hash-password"], DOWN, 2),
    ("close", ["close", "2024-01-01", "--note", "month end"], DOWN, 1),
    ("close", ["close", "2024-01-01", "--note", "month end"], MALFORMED, 2),
    ("reopen", ["reopen", "2024-01-01", "--reason", "late statement"], DOWN, 1),
    ("closes", ["closes", "list"], MALFORMED, 2),
    ("web", ["web"], {"REDIS_URL": BAD_REDIS}, 2),
    ("worker", ["worker"], MALFORMED, 2),
    ("api", ["api"], MALFORMED, 2),
]


def test_the_cases_cover_every_subcommand() -> None:
    # A new subcommand needs a case above. `sim` is the development simulator, a program of its own.
    subcommands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subcommands) - {"sim"} == {command for command, *_ in CASES}


@pytest.mark.parametrize(
    ("command", "argv", "env", "expected"),
    CASES,
    ids=[f"{' '.join(argv[:2])}-{'down' if env is DOWN else 'bad'}-{code}" for _, argv, env, code in CASES],
)
def test_every_command_ends_a_failure_with_one_line_and_its_exit_code(
    command: str,
    argv: list[str],
    env: dict[str, str],
    expected: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # hash-password reads stdin
    try:
        code = main(argv, env=env)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()

    assert code == expected, err
    assert_one_message(err, command)
    assert SECRET not in out + err
    assert out == ""  # nothing on stdout that could pass for a result (an export's CSV header, say)


async def test_a_statement_that_is_not_text_is_refused_in_one_line(tmp_path: Path) -> None:
    statement = tmp_path / "statement.csv"
    statement.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = await run_cli("import-statement", str(statement), env={"DATABASE_URL": DOWN_PG})
    assert code == 2, err
    assert_one_message(err, "import-statement")


async def _stall_the_payments_export(db: asyncpg.Connection, rows: int) -> None:
    """Payments whose export stalls at row `rows` (a view over the real table), so the test can cut Postgres
    away in the middle of it: what an export meets when the database restarts halfway."""
    await db.execute(
        "INSERT INTO payments (merchant_id, order_id, status, amount, tip, source) "
        "SELECT $1, 'O' || n, 'paid', n, 0, 'callback' FROM generate_series(1, $2) AS n",
        MERCHANT,
        rows + 100,
    )
    await db.execute("ALTER TABLE payments RENAME TO payments_stored")
    await db.execute(
        f"""CREATE FUNCTION stall(order_id text) RETURNS text LANGUAGE sql AS $$
            SELECT CASE WHEN order_id = 'O{rows}' THEN (SELECT order_id FROM pg_sleep(60)) ELSE order_id END $$"""
    )
    await db.execute(
        "CREATE VIEW payments AS SELECT id, merchant_id, stall(order_id) AS order_id, status, amount, tip, "
        "bizpay_order_id, finish_time_raw, finish_time, source, created_at, updated_at FROM payments_stored"
    )


async def _cut_when_stalled(db: asyncpg.Connection, database: str) -> None:
    for _ in range(600):
        stalled = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event = 'PgSleep'", database
        )
        if stalled:
            await db.execute("SELECT pg_terminate_backend($1)", stalled)
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the export never reached the stalled row")


async def test_an_export_to_a_file_that_fails_midway_leaves_no_file(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await _stall_the_payments_export(db, 2500)
    target = tmp_path / "payments.csv"
    database = database_url.rsplit("/", 1)[1]

    (code, _, err), _ = await asyncio.gather(
        run_cli("export", "payments", "--output", str(target), env={"DATABASE_URL": database_url}),
        _cut_when_stalled(db, database),
    )

    assert code == 1, err
    assert os.listdir(tmp_path) == []  # neither the file nor its temporary twin
    assert_one_message(err, "export")
    assert f"{target} not written" in err


async def test_an_export_to_stdout_that_fails_midway_says_the_output_is_incomplete(
    database_url: str, db: asyncpg.Connection
) -> None:
    await _stall_the_payments_export(db, 2500)
    database = database_url.rsplit("/", 1)[1]

    (code, out, err), _ = await asyncio.gather(
        run_cli("export", "payments", env={"DATABASE_URL": database_url}), _cut_when_stalled(db, database)
    )

    assert code == 1, err
    assert out.startswith("merchant_id,order_id,")  # what was written stays written ...
    assert_one_message(err, "export")
    assert "the CSV written to stdout is incomplete" in err  # ... and is called incomplete


async def test_an_export_to_a_file_writes_it_whole_on_success(
    database_url: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await db.execute(
        "INSERT INTO payments (merchant_id, order_id, status, amount, tip, source) VALUES ($1, 'ONE', 'paid', 5, 0, "
        "'callback')",
        MERCHANT,
    )
    target = tmp_path / "payments.csv"

    code, out, err = await run_cli("export", "payments", "-o", str(target), env={"DATABASE_URL": database_url})

    assert code == 0, err
    assert out == ""
    lines = target.read_text().splitlines()
    assert lines[0].startswith("merchant_id,") and lines[1].startswith(f"{MERCHANT},ONE,paid,5,0,")
    assert os.listdir(tmp_path) == ["payments.csv"]
    assert "exported 1 row(s)" in err


async def test_an_export_to_a_directory_that_does_not_exist_is_one_line(database_url: str, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "payments.csv"
    code, out, err = await run_cli("export", "payments", "-o", str(target), env={"DATABASE_URL": database_url})
    assert code == 1, err
    assert out == ""
    assert_one_message(err, "export")
    assert f"nothing written to {target}" in err
