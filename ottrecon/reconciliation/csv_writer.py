"""Writing CSV the one way every export of ottrecon does: a spreadsheet-safe cell (csv_cell), a server-side
cursor loop (write_csv), and the same bytes with the cells rendered by Postgres and streamed by COPY (copy_csv,
with the sql_*_cell renderers that mirror csv_cell).

Read-only transactions, constant memory; "\n" line ends. tests/integration/test_ledger_export_bytes.py holds the
two paths to identical bytes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, TextIO

import asyncpg

from ottrecon import db
from ottrecon.progress import Progress

# Spreadsheets run cells starting with these as formulas; text from callbacks is untrusted.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def sql_text_cell(expr: str) -> str:
    """SQL rendering a text as csv_cell does: NULL and '' as nothing, a formula-looking text prefixed with a quote."""
    # ascii(): the code of the first character (0 for ''), so no substring is built per cell.
    codes = ", ".join(str(ord(prefix)) for prefix in FORMULA_PREFIXES)
    return f"CASE WHEN ascii({expr}) IN ({codes}) THEN chr(39) || {expr} ELSE nullif({expr}, '') END"


def sql_time_cell(expr: str) -> str:
    """SQL rendering a timestamptz as csv_cell does (isoformat() of the UTC datetime asyncpg returns):
    2024-05-01T12:00:00+00:00, with .ffffff only when it has microseconds; asyncpg reads ±infinity as the
    naive datetime.max / datetime.min."""
    # '.000000' can only be the fraction (nothing else in the format has a dot): dropped as isoformat() does.
    # to_char() is NULL for ±infinity, and only then is the CASE evaluated.
    finite = f"""replace(to_char({expr} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '.000000', '') || '+00:00'"""
    infinite = (
        f"CASE {expr} WHEN 'infinity' THEN '9999-12-31T23:59:59.999999' WHEN '-infinity' THEN '0001-01-01T00:00:00' END"
    )
    return f"coalesce({finite}, {infinite})"


def sql_date_cell(expr: str) -> str:
    """SQL rendering a date as csv_cell does (str() of the date asyncpg returns; ±infinity as date.max / date.min)."""
    infinite = f"CASE {expr} WHEN 'infinity' THEN '9999-12-31' WHEN '-infinity' THEN '0001-01-01' END"
    return f"coalesce(to_char({expr}, 'YYYY-MM-DD'), {infinite})"


class _KeptErrorOutput:
    """An export's output whose own error (a closed pipe, a browser gone) is kept, to be raised as itself once the
    transaction is over: raised inside translate_errors an OSError read as "Postgres unavailable", and raised inside
    a COPY's sink it made asyncpg cancel a COPY the server may have finished already, then wait out the pool's
    command timeout (30 s). Writes after a failure are dropped."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.error: Exception | None = None

    def write(self, text: str) -> int:
        if self.error is None:
            try:
                return self._out.write(text)
            except Exception as exc:  # whatever the output raises is the export's error, raised by raise_kept
                self.error = exc
        return 0

    def raise_kept(self) -> None:
        if self.error is not None:
            raise self.error


async def write_csv(
    pool: asyncpg.Pool,
    out: TextIO,
    columns: Sequence[str],
    query: str,
    args: Sequence[Any],
    fetch_size: int,
    progress: Progress | None = None,
) -> int:
    """The one cursor-to-CSV loop of every export (CLI and console): a header, then each row's cells (csv_cell),
    "\n" line ends. Read-only, through a server-side cursor (constant memory); returns the rows written.

    With an interactive progress, the rows are counted first, in the same repeatable-read snapshot, so the
    total shown is exactly what is written (a second pass over the rows, without the CSV work: cheap)."""
    progress = progress or Progress.silent()
    output = _KeptErrorOutput(out)
    writer = csv.writer(output, lineterminator="\n")
    writer.writerow(columns)
    output.raise_kept()
    count = 0
    isolation: Literal["repeatable_read"] | None = "repeatable_read" if progress.interactive else None
    async with db.translate_errors(), pool.acquire() as conn, conn.transaction(isolation=isolation, readonly=True):
        total = None
        if progress.interactive:
            progress.stage("counting rows")
            total = await conn.fetchval(f"SELECT count(*) FROM ({query}) counted", *args)
        progress.stage(unit="rows", total=total)
        async for record in conn.cursor(query, *args, prefetch=fetch_size):
            writer.writerow([csv_cell(value) for value in record.values()])
            if output.error is not None:
                break
            count += 1
            progress.advance()
    output.raise_kept()
    return count


def csv_cell(value: object) -> object:
    """One CSV cell: empty for NULL, ISO-8601 for times, a text that a spreadsheet would run as a
    formula prefixed with a quote. Shared by every CSV this project writes."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


async def copy_csv(
    pool: asyncpg.Pool,
    out: TextIO,
    columns: Sequence[str],
    query: str,
    args: Sequence[Any],
    progress: Progress | None = None,
) -> int:
    """write_csv's output for a query whose cells are already rendered as csv_cell would (EXPORT_LEDGER_CSV),
    streamed by COPY … TO STDOUT (FORMAT csv): no row is decoded in Python. Read-only; constant memory (asyncpg
    hands over what arrived, and waits for each write); returns the rows written. progress counts rows as
    write_csv's does (an interactive one counts them first, in the same snapshot)."""
    progress = progress or Progress.silent()
    output = _KeptErrorOutput(out)
    csv.writer(output, lineterminator="\n").writerow(columns)
    output.raise_kept()

    async def write(chunk: bytes) -> None:
        # After the output failed, the rest of the COPY is read and dropped (a 1M-row ledger in a few seconds):
        # cancelling it is what could hang (see _KeptErrorOutput).
        if output.error is not None:
            return
        # asyncpg passes whole CopyData messages, and COPY sends one row per message: a chunk is whole rows.
        text = bytes(chunk).decode("utf-8")
        # COPY quotes a cell holding a carriage return; csv.writer with "\n" line ends does not. Such a text
        # (from a callback or a statement file) is rare: only then are the chunk's rows parsed and re-written.
        output.write(_rewritten(text) if "\r" in text else text)
        # For the display only (a cell holding a line break counts twice); the count returned is COPY's own.
        progress.advance(text.count("\n"))

    isolation: Literal["repeatable_read"] | None = "repeatable_read" if progress.interactive else None
    async with db.translate_errors(), pool.acquire() as conn, conn.transaction(isolation=isolation, readonly=True):
        total = None
        if progress.interactive:
            progress.stage("counting rows")
            total = await conn.fetchval(f"SELECT count(*) FROM ({query}) counted", *args)
        progress.stage(unit="rows", total=total)
        status = await conn.copy_from_query(query, *args, output=write, format="csv")
    output.raise_kept()
    return int(status.rsplit(" ", 1)[-1])


def _rewritten(text: str) -> str:
    """CSV rows as COPY wrote them, re-written by csv.writer (the cells parse back to the same texts)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(csv.reader(io.StringIO(text, newline="")))
    return buffer.getvalue()


# Column lists are the CSV headers; the queries select exactly these, in this order.
