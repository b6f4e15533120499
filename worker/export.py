"""Streamed CSV exports of payments and rejected callbacks (constant memory at any size)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

import asyncpg

from ottrecon import db

# Column lists are the CSV headers; the queries select exactly these, in this order.
PAYMENT_COLUMNS = (
    "merchant_id",
    "order_id",
    "status",
    "amount",
    "tip",
    "bizpay_order_id",
    "finish_time",
    "finish_time_parsed",
    "source",
    "recorded_at",
    "updated_at",
)
# Payments in a stable order; amounts are integer cents exactly as OTT Pay reported them.
EXPORT_PAYMENTS = """
SELECT merchant_id, order_id, status, amount, tip, bizpay_order_id,
       finish_time_raw, finish_time, source, created_at, updated_at
FROM payments ORDER BY id
"""
REJECTED_COLUMNS = (
    "id",
    "merchant_id",
    "reason",
    "detail",
    "received_at",
    "last_received_at",
    "times_received",
    "md5",
    "resolved_at",
    "resolution",
)
# Rejected callbacks, open and resolved; merchant_id is as claimed, never verified.
EXPORT_REJECTED = """
SELECT id, merchant_id, reason, detail, received_at, last_received_at,
       times_received, md5, resolved_at, resolution
FROM rejected_callbacks ORDER BY id
"""
EXPORTS: dict[str, tuple[str, Sequence[str]]] = {
    "payments": (EXPORT_PAYMENTS, PAYMENT_COLUMNS),
    "rejected": (EXPORT_REJECTED, REJECTED_COLUMNS),
}
# Spreadsheets run cells starting with these as formulas; text from callbacks is untrusted.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


async def export_csv(pool: asyncpg.Pool, what: str, out: TextIO, fetch_size: int = 2000) -> int:
    """Write a header and every row of the named export to out; return the number of rows.

    Rows are read through a server-side cursor, so memory does not grow with the table.
    """
    query, columns = EXPORTS[what]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    async with db.translate_errors(), pool.acquire() as conn, conn.transaction(readonly=True):
        async for record in conn.cursor(query, prefetch=fetch_size):
            writer.writerow([csv_cell(value) for value in record.values()])
            count += 1
    return count


def csv_cell(value: object) -> object:
    """One CSV cell: empty for NULL, ISO-8601 for times, a text that a spreadsheet would run as a
    formula prefixed with a quote. Shared by every CSV this project writes."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value
