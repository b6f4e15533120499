"""The raw-table exports: payments and rejected callbacks as they were recorded, before any reconciliation.

The reconciled reports (ledger, summary, mismatches, closes) are reports.py's; these two read one table each, in
id order, for an auditor who wants the evidence itself. Both stream through a server-side cursor (csv_writer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

import asyncpg

from ottrecon.progress import Progress
from ottrecon.reconciliation.csv_writer import write_csv

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


async def export_csv(
    pool: asyncpg.Pool, what: str, out: TextIO, fetch_size: int = 2000, progress: Progress | None = None
) -> int:
    """Write a header and every row of the named export to out; return the number of rows.

    Rows are read through a server-side cursor, so memory does not grow with the table.
    """
    query, columns = EXPORTS[what]
    return await write_csv(pool, out, columns, query, (), fetch_size, progress)
