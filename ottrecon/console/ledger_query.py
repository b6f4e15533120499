"""The ledger page's SQL, built from the reports' select so the page and the CSV see the same columns.

Only fixed fragments with $n placeholders are joined, never input. Each filter present adds its
clause, so Postgres plans every combination with the right index (sql/0005_console_indexes.sql):
ledger_keyset_idx for dates, ledger_merchant_keyset_idx with a merchant, ledger_order_id_idx for an
order id. Rows come in report order (business date, merchant, order id), the keyset of the pages.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from ottrecon.console.filters import LedgerFilter
from ottrecon.console.paging import Key
from ottrecon.db import translate_errors
from ottrecon.reconciliation.reports import LEDGER_COLUMNS, LEDGER_SELECT

ORDER = "ORDER BY l.business_date, l.merchant_id, l.order_id"
# Statuses that are a mismatch (an alert) rather than a settled or waiting row.
QUIET_STATUSES = ("matched", "pending")


def where(f: LedgerFilter, after: Key | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause and its arguments for a filter, optionally after a keyset cursor."""
    args: list[Any] = [f.dates.date_from, f.dates.date_to]
    clauses = ["l.business_date BETWEEN $1 AND $2"]
    for column, value in (
        ("merchant_id", f.merchant_id),
        ("channel", f.channel),
        ("recon_status", f.recon_status),
        ("order_id", f.order_id),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"l.{column} = ${len(args)}")
    if after is not None:
        args.extend(after)
        n = len(args)
        clauses.append(f"(l.business_date, l.merchant_id, l.order_id) > (${n - 2}::date, ${n - 1}, ${n})")
    return " AND ".join(clauses), args


def csv_query(f: LedgerFilter) -> tuple[str, list[Any]]:
    """Every row of the filter, in the CSV's columns and order (those of `ottrecon export ledger`)."""
    clause, args = where(f)
    return f"{LEDGER_SELECT} FROM ledger l WHERE {clause} {ORDER}", args


async def fetch_page(pool: asyncpg.Pool, f: LedgerFilter, after: Key | None, limit: int) -> list[dict[str, Any]]:
    """Up to limit rows after the cursor, as dicts keyed by LEDGER_COLUMNS (plus nothing else)."""
    clause, args = where(f, after)
    sql = f"{LEDGER_SELECT} FROM ledger l WHERE {clause} {ORDER} LIMIT {int(limit)}"
    async with translate_errors(), pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    return [dict(zip(LEDGER_COLUMNS, row.values(), strict=True)) for row in rows]


def key_of(row: dict[str, Any]) -> tuple[date, str, str]:
    """A row's position in the keyset order."""
    return row["business_date"], row["merchant_id"], row["order_id"]
