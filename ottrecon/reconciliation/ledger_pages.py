"""The console's ledger page: a selection of ledger rows, read page by page with a keyset cursor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from ottrecon import db
from ottrecon.reconciliation.reports import BOOKED_JOIN, BOOKED_SELECT, LEDGER_COLUMNS, LEDGER_SELECT

# The ledger page's rows (the console), in the report's columns and key order: only fixed fragments with
# $n placeholders are joined, never input. Each filter present adds its clause, so Postgres plans every
# combination with the right index (sql/0005_console_indexes.sql): ledger_keyset_idx for dates,
# ledger_merchant_keyset_idx with a merchant, ledger_order_id_idx for an order id.
LEDGER_ORDER = "ORDER BY l.business_date, l.merchant_id, l.order_id"


@dataclass(frozen=True)
class LedgerSelection:
    """Which ledger rows: business dates date_from..date_to (inclusive) and optional exact matches."""

    date_from: date
    date_to: date
    merchant_id: str | None = None
    channel: str | None = None
    recon_status: str | None = None
    order_id: str | None = None


def ledger_where(selection: LedgerSelection, after: tuple[Any, ...] | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause and its arguments for a selection, optionally after a (date, merchant, order) cursor."""
    args: list[Any] = [selection.date_from, selection.date_to]
    clauses = ["l.business_date BETWEEN $1 AND $2"]
    for column, value in (
        ("merchant_id", selection.merchant_id),
        ("channel", selection.channel),
        ("recon_status", selection.recon_status),
        ("order_id", selection.order_id),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"l.{column} = ${len(args)}")
    if after is not None:
        args.extend(after)
        n = len(args)
        clauses.append(f"(l.business_date, l.merchant_id, l.order_id) > (${n - 2}::date, ${n - 1}, ${n})")
    return " AND ".join(clauses), args


def ledger_query(
    selection: LedgerSelection, after: tuple[Any, ...] | None = None, limit: int | None = None, *, booked: bool = False
) -> tuple[str, list[Any]]:
    """The selected rows in LEDGER_COLUMNS and report order, optionally a page; booked: in LEDGER_EXPORT_COLUMNS
    (where each order is booked, as `ottrecon export ledger` writes)."""
    clause, args = ledger_where(selection, after)
    page = f" LIMIT {int(limit)}" if limit is not None else ""
    select, join = (LEDGER_SELECT + BOOKED_SELECT, BOOKED_JOIN) if booked else (LEDGER_SELECT, "")
    return f"{select} FROM ledger l{join} WHERE {clause} {LEDGER_ORDER}{page}", args


async def ledger_page(
    pool: asyncpg.Pool, selection: LedgerSelection, after: tuple[Any, ...] | None, limit: int
) -> list[dict[str, Any]]:
    """Up to limit rows after the cursor, as dicts keyed by LEDGER_COLUMNS (plus nothing else)."""
    sql, args = ledger_query(selection, after, limit)
    async with db.translate_errors(), pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    return [dict(zip(LEDGER_COLUMNS, row.values(), strict=True)) for row in rows]


def ledger_key(row: dict[str, Any]) -> tuple[date, str, str]:
    """A row's position in the report's key order (the pages' keyset cursor)."""
    return row["business_date"], row["merchant_id"], row["order_id"]
