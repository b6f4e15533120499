"""Idempotent, set-based import of a settlement statement file (layouts live in statement_layout)."""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from ottpay.strict_json import has_unstorable
from ottrecon.db import translate_errors
from ottrecon.progress import Progress
from ottrecon.reconciliation.books_lock import hold_books
from ottrecon.reconciliation.layouts import (
    ImportReport,
    StatementError,
    StatementLayout,
    StatementLine,
    parse_statement,
)

# Lines stored per statement: bounds memory while keeping round trips few.
CHUNK_LINES = 5000

# Record the import once: the same bytes (same SHA-256) for the same period and merchants insert nothing and return
# no id. The same bytes for another period or other merchants are an import of their own (decision 0050).
# imported_at is the clock when the import got its turn (it runs after hold_books), not the transaction's start
# (the column's default): an import that waited for another one then shows as imported after it, as its id and
# its precedence say (docs/RECONCILIATION.md, "Which statement line counts").
INSERT_IMPORT = """
INSERT INTO statement_imports (file_name, file_sha256, period_start, period_end, merchant_ids, line_count, imported_at)
VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp())
ON CONFLICT ON CONSTRAINT statement_imports_file_key DO NOTHING RETURNING id
"""
# Store a chunk of lines; every line is kept (a newer statement supersedes an older one's line at
# reconciliation, docs/RECONCILIATION.md). Returns how many of them an earlier import stated identically.
INSERT_LINES = """
WITH stored AS (
    INSERT INTO statement_lines (import_id, line_no, merchant_id, order_id, bizpay_order_id, amount, tip, fee,
                                 refund, txn_time_raw, txn_time, business_date, line_sha256)
    SELECT $1, t.* FROM unnest($2::int4[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::int8[],
                               $9::int8[], $10::text[], $11::timestamptz[], $12::date[], $13::text[])
        AS t(line_no, merchant_id, order_id, bizpay_order_id, amount, tip, fee, refund, txn_time_raw, txn_time,
             business_date, line_sha256)
    ORDER BY t.line_no  -- ids follow the file's order
    RETURNING line_sha256
)
SELECT count(*) FILTER (
    WHERE EXISTS (SELECT 1 FROM statement_lines e WHERE e.line_sha256 = stored.line_sha256 AND e.import_id <> $1)
) FROM stored
"""
# Gateway payments (merchant, order, channel id) this import lists more than once: settled twice.
REPEATED_PAYMENTS = """
SELECT count(*) - count(DISTINCT (merchant_id, order_id, coalesce(bizpay_order_id, '')))
FROM statement_lines WHERE import_id = $1
"""
RECENT_IMPORTS = "SELECT * FROM statement_imports ORDER BY id DESC LIMIT 20"
IMPORT_BY_ID = "SELECT * FROM statement_imports WHERE id = $1"
# The import of these bytes for this period and merchants (statement_imports_file_key).
IMPORT_BY_SPAN = """
SELECT id FROM statement_imports
WHERE file_sha256 = $1 AND period_start = $2 AND period_end = $3 AND merchants_sha256 = statement_merchants_sha256($4)
"""


async def import_statement(
    pool: asyncpg.Pool,
    path: Path,
    layout: StatementLayout,
    *,
    business_tz: str = "America/Toronto",
    period: tuple[date, date] | None = None,
    merchants: Sequence[str] = (),
    progress: Progress | None = None,
) -> ImportReport:
    """Validate the whole file, then store every line in one transaction; idempotent per file.

    period defaults to the lines' first..last business date; lines without a time get the period's
    start. merchants: whose statement this is (every line must name one of them); by default the
    merchants its lines name. A file without lines needs them (it then says the gateway settled none
    of their payments in the period). Raises StatementError (nothing
    stored) for a bad file or arguments, DatabaseUnavailable when Postgres is away (safe to retry). Reads
    the file twice; memory is bounded by CHUNK_LINES. progress: the first pass in bytes of the file, the
    second in lines stored.
    """
    progress = progress or Progress.silent()
    tz = _zone(business_tz)
    if period and period[0] > period[1]:
        raise StatementError([f"period start {period[0]} is after its end {period[1]}"], "invalid period:")
    declared = _merchants(merchants)
    # Pass 1 validates everything before the database is touched, keeping only counts and bounds.
    read, named, first, last, digest = 0, set[str](), date.max, date.min, hashlib.sha256()
    progress.stage(f"checking {path.name}", unit="bytes", total=_size(path))

    def checked(raw: bytes) -> None:
        digest.update(raw)
        progress.advance(len(raw))

    for line in parse_statement(_utf8_lines(path, checked), layout, business_tz=tz, period=period, merchants=declared):
        read, day = read + 1, line.business_date
        named.add(line.merchant_id)
        first, last = (min(first, day), max(last, day)) if day else (first, last)
    if not period and first > last:
        raise StatementError(["no line has a txn_time (or there are no lines): give the period"], "no period:")
    if not read and declared is None:
        # It would cover nobody (coverage goes by the merchants named) and so change nothing while listed as a
        # statement: refused, with what to do instead.
        problem = "the file has no lines, so it names no merchant: give the merchants whose statement it is"
        raise StatementError([problem, "(--merchant MID: it then says nothing was settled for them)"], "no merchant:")
    start, end = period or (first, last)
    report = ImportReport(None, True, read, 0, 0, 0, start, end, tuple(sorted(declared or named)))
    again = hashlib.sha256()
    async with translate_errors(), pool.acquire() as conn, conn.transaction():
        # Before anything is written: reconciler batches in flight finish first, and later ones (and another
        # import) wait for this commit, so no key of this period is recomputed without it (decision 0047).
        await hold_books(conn)
        args = (
            path.name,
            digest.hexdigest(),
            start,
            end,
            report.merchant_ids,
            read,
        )
        if (import_id := await conn.fetchval(INSERT_IMPORT, *args)) is None:
            return report
        unchanged, chunk = 0, list[StatementLine]()
        progress.stage(f"storing {path.name}", unit="lines", total=read)
        for line in parse_statement(
            _utf8_lines(path, again.update), layout, business_tz=tz, period=period, merchants=declared
        ):
            chunk.append(line)
            if len(chunk) == CHUNK_LINES:
                unchanged += await conn.fetchval(INSERT_LINES, import_id, *_columns(chunk, start))
                progress.advance(len(chunk))
                chunk = []
        if chunk:
            unchanged += await conn.fetchval(INSERT_LINES, import_id, *_columns(chunk, start))
            progress.advance(len(chunk))
        if again.digest() != digest.digest():  # raising here rolls the whole import back
            raise StatementError(["the file changed while it was being imported"], "statement rejected:")
        repeated = await conn.fetchval(REPEATED_PAYMENTS, import_id)
    return ImportReport(import_id, False, read, read, unchanged, repeated, start, end, report.merchant_ids)


def split_merchants(values: Iterable[str]) -> list[str]:
    """Merchant ids as a person gives them (repeated, or comma-separated, spaces around them): the CLI and the
    console read them alike. A merchant id holds no comma (OTT Pay's are letters and digits)."""
    return [m.strip() for value in values for m in value.split(",") if m.strip()]


def _merchants(given: Sequence[str]) -> frozenset[str] | None:
    """The merchants a statement is declared for (None: those its lines name); blank ids are an error."""
    if isinstance(given, str):
        raise TypeError("merchants must be a sequence of merchant ids, not one string")
    if not given:
        return None
    # Stored in merchant_ids (text[]): NUL and lone surrogates would fail the insert instead of being refused here.
    if bad := [ascii(m)[:40] for m in given if not m.strip() or m != m.strip() or has_unstorable(m)]:
        problem = f"merchant id {', '.join(bad)} is blank, has spaces around it, or holds a NUL or a lone surrogate"
        raise StatementError([problem], "invalid merchants:")
    return frozenset(given)


def _utf8_lines(path: Path, hash_update: Callable[[bytes], object]) -> Iterator[str]:
    """The file's lines decoded as UTF-8 (a leading BOM dropped), hashing the exact bytes on the way.

    Decoding line by line (not in 8 KiB blocks) lets a decoding error name its line.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    with path.open("rb") as binary:
        for raw in binary:
            hash_update(raw)
            yield decoder.decode(raw)
        if tail := decoder.decode(b"", final=True):
            yield tail


def _size(path: Path) -> int | None:
    """The file's size, the first pass's total; None for a pipe or a device (their size says nothing)."""
    return path.stat().st_size or None


def _columns(chunk: list[StatementLine], default_day: date) -> list[list[Any]]:
    names = ("line_no", "merchant_id", "order_id", "bizpay_order_id", "amount", "tip", "fee", "refund")
    columns = [[getattr(line, name) for line in chunk] for name in (*names, "txn_time_raw", "txn_time")]
    return [*columns, [line.business_date or default_day for line in chunk], [line.sha256 for line in chunk]]


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise StatementError([f"unknown time zone {name!r}"], "invalid import arguments:") from exc
