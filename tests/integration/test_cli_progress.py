"""Long commands as an operator and cron see them: progress on a real terminal, one summary line without one.

Each command runs as a subprocess on real Postgres and Redis. "On a terminal" gives it a pseudo-terminal
(the pty module) as stderr, as an interactive shell does; "as cron runs it" gives it pipes and no LOG_LEVEL.
"""

from __future__ import annotations

import asyncio
import csv
import fcntl
import io
import os
import pty
import re
import struct
import sys
import termios
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from arq import ArqRedis

from ottpay.keys import parse_merchant_keys
from ottrecon.callbacks import store
from ottrecon.callbacks.deadletter import park
from ottrecon.callbacks.verify import judge
from ottrecon.db import Connection
from ottrecon.reconciliation.reconcile import mark_all_dirty, reconcile_pending
from tests.conftest import MERCHANT, OLD_KEY, OTHER_KEY
from tests.integration.support import make_callback

OTTRECON = str(Path(sys.executable).with_name("ottrecon"))
# Every summary ends with how long the command took: "… (took 0.3 s)", "… (took 3 min 05 s)".
SUMMARY_END = re.compile(r" \(took (\d+\.\d s|\d+ s|\d+ min \d\d s|\d+ h \d\d min)\)$")
# A redraw: back to the line's start, the text, erase the rest of the line.
REDRAW = re.compile(r"\r([^\r\n]*?)\x1b\[K")
WIDTH = 150
STATEMENT_LINES = 40
REJECTIONS = 30
DEAD_LETTERS = 12
PAYMENTS = 25


WORLD_KEYS = f"{MERCHANT}={OLD_KEY}"


@dataclass
class World:
    """A database and a Redis with some of everything the long commands work on."""

    env: dict[str, str]
    statement: Path


@pytest.fixture
async def world(database_url: str, redis_url: str, redis: ArqRedis, tmp_path: Path) -> AsyncIterator[World]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        async with pool.acquire() as conn:
            await add_orphan_payments(conn, PAYMENTS)
        await mark_all_dirty(pool)
        await reconcile_pending(pool, business_tz="America/Toronto")
        # Callbacks of a merchant nobody configured: rejected, and still rejected when replayed.
        envelopes = [make_callback(f"REJ{i}", merchant_id="NB00000001", key=OTHER_KEY) for i in range(REJECTIONS)]
        verdicts = [judge(envelope, datetime.now(UTC), parse_merchant_keys(WORLD_KEYS)) for envelope in envelopes]
        async with pool.acquire() as conn:
            await store.record_on(conn, [], verdicts)  # type: ignore[arg-type]  # every verdict is a rejection
    for i in range(DEAD_LETTERS):
        await park(redis, [{"envelope": make_callback(f"DEAD{i}")}], reason="postgres away")
    statement = tmp_path / "statement.csv"
    lines = [f"{MERCHANT},ST{i},AL{i},{1000 + i},0,20,0,2026-11-20 10:00:00\n" for i in range(STATEMENT_LINES)]
    statement.write_text("merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n" + "".join(lines))
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "OTTPAY_MERCHANTS": WORLD_KEYS}
    yield World(env, statement)


async def add_orphan_payments(conn: Connection, count: int) -> None:
    """Paid payments for orders this system never created: each one a ledger row and an orphan_payment alert."""
    await conn.execute(
        "INSERT INTO payments (merchant_id, order_id, status, amount, tip, source) "
        "SELECT $1, 'ORPHAN' || n, 'paid', 1000 + n, 0, 'callback' FROM generate_series(1, $2) n",
        MERCHANT,
        count,
    )


async def run_without_terminal(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """As cron runs a command: output to pipes, LOG_LEVEL and TERM unset."""
    process = await asyncio.create_subprocess_exec(
        OTTRECON, *args, env={"PATH": os.environ.get("PATH", ""), **env},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def run_on_terminal(*args: str, env: dict[str, str], stdout_too: bool) -> tuple[int, str, str]:
    """As an operator runs a command in a shell: stderr (and stdout, when stdout_too) on a pseudo-terminal
    WIDTH columns wide. Returns the exit code, stdout read from its pipe, and everything the terminal received."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, WIDTH, 0, 0))
    try:
        process = await asyncio.create_subprocess_exec(
            OTTRECON, *args, env={"PATH": os.environ.get("PATH", ""), "LOG_LEVEL": "WARNING", **env},
            stdin=asyncio.subprocess.DEVNULL, stdout=follower if stdout_too else asyncio.subprocess.PIPE,
            stderr=follower,
        )  # fmt: skip
    finally:
        os.close(follower)  # the child holds its own copies: the terminal ends when the child exits
    try:
        terminal = asyncio.create_task(asyncio.to_thread(_read_until_closed, leader))
        out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
        screen = await asyncio.wait_for(terminal, timeout=10)
    finally:
        os.close(leader)
    assert process.returncode is not None
    return process.returncode, (out or b"").decode(), screen.decode()


def _read_until_closed(fd: int) -> bytes:
    received = bytearray()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every holder of the terminal's other end closed it
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk


def redraws(screen: str) -> list[str]:
    """The progress lines drawn on the terminal, in order."""
    return REDRAW.findall(screen)


def last_line(screen: str) -> str:
    """What the terminal shows on its last line once the command is over (the terminal turns \\n into \\r\\n)."""
    assert screen.endswith("\r\n"), repr(screen[-200:])
    return screen[:-2].rsplit("\r\n", 1)[-1].rsplit("\r", 1)[-1].replace("\x1b[K", "")


# (arguments, the text of the first progress line, the summary's start) for every long command.
LONG_COMMANDS = [
    pytest.param(("reconcile", "--all"), "reconcile --all: queueing every key...", "reconciled ", id="reconcile"),
    pytest.param(
        ("import-statement", "STATEMENT"),
        "import-statement: checking statement.csv: 0 B / ",
        f"imported {STATEMENT_LINES} line(s)",
        id="import",
    ),
    *(
        pytest.param(("export", what), f"export {what}: counting rows...", f"exported {rows} row(s)", id=what)
        for what, rows in (
            ("ledger", PAYMENTS),
            ("summary", 1),
            ("mismatches", PAYMENTS),
            ("payments", PAYMENTS),
            ("rejected", REJECTIONS),
        )
    ),
    pytest.param(("replay-rejected",), f"replay-rejected: 0 / {REJECTIONS} callbacks (0%)", "recorded 0", id="replay"),
    pytest.param(
        ("requeue-dead",), f"requeue-dead: 0 / {DEAD_LETTERS} entries (0%)", f"requeued {DEAD_LETTERS}", id="requeue"
    ),
]


def command_line(args: tuple[str, ...], world: World) -> list[str]:
    return [str(world.statement) if arg == "STATEMENT" else arg for arg in args]


@pytest.mark.parametrize(("args", "first_line", "summary"), LONG_COMMANDS)
async def test_long_command_without_a_terminal_prints_only_its_summary_line(
    world: World, args: tuple[str, ...], first_line: str, summary: str
) -> None:
    code, out, err = await run_without_terminal(*command_line(args, world), env=world.env)

    assert code == 0, err
    if args[0] == "export":  # the CSV on stdout, the summary alone on stderr
        assert next(csv.reader(io.StringIO(out)))[0] in {"merchant_id", "business_date", "id"}
        assert err.count("\n") == 1 and err.endswith("\n"), err
        line = err[:-1]
    else:
        assert err == ""
        assert out.count("\n") == 1 and out.endswith("\n"), out
        line = out[:-1]
    assert line.startswith(summary), line
    assert SUMMARY_END.search(line), line
    assert "\r" not in out + err and "\x1b" not in out + err


@pytest.mark.parametrize(("args", "first_line", "summary"), LONG_COMMANDS)
async def test_long_command_on_a_terminal_draws_progress_then_its_summary(
    world: World, args: tuple[str, ...], first_line: str, summary: str
) -> None:
    export = args[0] == "export"
    code, out, screen = await run_on_terminal(*command_line(args, world), env=world.env, stdout_too=not export)

    assert code == 0, screen
    drawn = redraws(screen)
    assert drawn and drawn[0].startswith(first_line), drawn
    assert all(len(line) < WIDTH for line in drawn)
    # The progress line is erased before the summary, which stays on the terminal.
    summary_line = last_line(screen)
    assert summary_line.startswith(summary) and SUMMARY_END.search(summary_line), repr(screen[-300:])
    assert screen.endswith("\r\x1b[K" + summary_line + "\r\n")
    if export:  # the CSV is clean: nothing of the progress in it
        assert "\r" not in out and "\x1b" not in out and "rows" not in out
        rows = list(csv.reader(io.StringIO(out)))
        assert len(rows) - 1 == int(summary.split()[1])
        counted = [line for line in drawn if " / " in line]
        assert counted and counted[0].startswith(f"{' '.join(args)}: 0 / {len(rows) - 1:,} rows"), drawn


async def test_export_to_a_terminal_draws_no_progress_over_the_csv(world: World) -> None:
    # stdout and stderr on one terminal: the rows themselves show the progress, redraws would garble them.
    code, _, screen = await run_on_terminal("export", "payments", env=world.env, stdout_too=True)

    assert code == 0, screen
    assert "\x1b" not in screen
    assert screen.count("\r\n") == PAYMENTS + 2  # the header, the rows, the summary
    assert SUMMARY_END.search(last_line(screen))


async def test_reconcile_all_on_a_terminal_shows_rate_and_time_left_while_it_runs(
    database_url: str, db: asyncpg.Connection
) -> None:
    keys = 16_000  # eight batches of the reconciler: long enough for redraws in between
    await add_orphan_payments(db, keys)

    code, _, screen = await run_on_terminal("reconcile", "--all", env={"DATABASE_URL": database_url}, stdout_too=True)

    assert code == 0, screen
    drawn = redraws(screen)
    counted = [line for line in drawn if line.startswith("reconcile --all: ")]
    assert counted[0] == "reconcile --all: queueing every key..."
    assert counted[1] == f"reconcile --all: 0 / {keys:,} keys (0%)"
    measured = [re.fullmatch(r"reconcile --all: ([\d,]+) / ([\d,]+) keys \(\d+%\), ([\d,]+) keys/s(, .+ left)?", line)
                for line in counted[2:]]  # fmt: skip
    assert measured and all(measured), counted
    done = [int(m.group(1).replace(",", "")) for m in measured if m]
    assert done == sorted(done) and all(0 < n <= keys for n in done)
    summary_line = last_line(screen)
    assert summary_line.startswith(f"reconciled {keys} key(s) ({keys} queued by --all)"), summary_line
    assert await db.fetchval("SELECT count(*) FROM ledger") == keys


async def test_long_command_logs_at_the_level_asked_for(world: World) -> None:
    # Quiet by default for cron; LOG_LEVEL still brings the info records back for whoever wants them.
    code, out, err = await run_without_terminal("reconcile", "--all", env=world.env | {"LOG_LEVEL": "INFO"})

    assert code == 0, err
    assert '"message": "ledger reconciled"' in err
    assert out.startswith("reconciled ") and SUMMARY_END.search(out.strip()), out
