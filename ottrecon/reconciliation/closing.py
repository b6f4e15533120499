"""Closing the books: close business dates (freezing their summary), reopen them, list who closed what.

Rules: docs/RECONCILIATION.md, "Closing the books"; the design and its argument: decision 0031. A close
books every order's contribution to the date's summary as a 'close' entry (book_entries); from then on
the reconciler books any change as an adjustment on the first open business date (book_adjustments.sql).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from ottrecon.db import fetch_one, translate_errors
from ottrecon.errors import OttreconError
from ottrecon.reconciliation.books_lock import hold_books
from ottrecon.reconciliation.reports import NEEDS_A_PERSON

# A close is about one merchant ($2) or every merchant (NULL); a close of every merchant covers each one.
ACTIVE_CLOSES = """
SELECT id, business_date, merchant_id FROM book_closes
WHERE reopened_at IS NULL AND business_date BETWEEN $1 AND $3
  AND ($2::text IS NULL OR merchant_id IS NULL OR merchant_id = $2)
"""
# Mismatches nobody acknowledged yet on those dates: open alerts of ledger rows dated there.
UNACKNOWLEDGED = """
SELECT a.id, a.kind, a.merchant_id, a.order_id, a.amount_at_risk, l.business_date
FROM ledger l JOIN alerts a USING (merchant_id, order_id)
WHERE l.business_date = ANY ($1::date[]) AND ($2::text IS NULL OR l.merchant_id = $2) AND a.status = 'open'
ORDER BY l.business_date, a.merchant_id, a.order_id, a.kind
"""
INSERT_CLOSE = """
INSERT INTO book_closes (business_date, merchant_id, note, closed_by, forced, force_reason, open_mismatches)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id
"""
# What each order contributes to the daily summary of its dates, per channel: the summary's own formula
# (reports.DAILY_SUMMARY) before it is added up. {where} selects the ledger rows and refund bookings.
CONTRIBUTIONS = f"""
SELECT merchant_id, order_id, day, channel,
       sum(payments)::int4 AS payments, sum(gross)::int8 AS gross, sum(tips)::int8 AS tips,
       sum(refunds)::int8 AS refunds, sum(fees)::int8 AS fees, sum(mismatches)::int4 AS mismatches,
       sum(amount_at_risk)::int8 AS amount_at_risk, sum(unpaid)::int4 AS unpaid
FROM (
    SELECT l.merchant_id, l.order_id, l.business_date AS day, l.channel,
           (l.received_amount IS NOT NULL)::int4 AS payments, coalesce(l.received_amount, 0) AS gross,
           coalesce(l.received_tip, 0) AS tips, 0 AS refunds,
           CASE WHEN l.received_amount IS NOT NULL THEN l.fee ELSE 0 END AS fees,
           coalesce({NEEDS_A_PERSON}, false)::int4 AS mismatches,
           l.amount_at_risk + l.statement_amount_at_risk AS amount_at_risk,
           (l.recon_status = 'unpaid')::int4 AS unpaid
    FROM ledger l WHERE {{where}}
    UNION ALL
    SELECT l.merchant_id, l.order_id, l.business_date, l.channel, 0, 0, 0, l.amount, 0, 0, 0, 0
    FROM ledger_refunds l WHERE {{where}}
) parts
GROUP BY merchant_id, order_id, day, channel
"""
# Book the date's contributions as 'close' entries ($1 close id, $2 date, $3 merchant or NULL), every order's
# entry numbers continuing its own (book_entries_order_entry_key). An order whose rows are all zero is
# booked too: its group is a row of the summary, which must stay as it was shown.
BOOK_CLOSE = f"""
WITH c AS ({CONTRIBUTIONS.format(where="l.business_date = $2 AND ($3::text IS NULL OR l.merchant_id = $3)")})
INSERT INTO book_entries (merchant_id, order_id, entry_no, kind, close_id, corrects_date, booked_on, channel,
                          payments, gross, tips, refunds, fees, mismatches, amount_at_risk, unpaid,
                          seen_statement_line_ids)
SELECT c.merchant_id, c.order_id,
       coalesce((SELECT max(e.entry_no) FROM book_entries e
                 WHERE e.merchant_id = c.merchant_id AND e.order_id = c.order_id), 0)
           + row_number() OVER (PARTITION BY c.merchant_id, c.order_id ORDER BY c.channel NULLS LAST)::int4,
       'close', $1, c.day, c.day, c.channel, c.payments, c.gross, c.tips, c.refunds, c.fees, c.mismatches,
       c.amount_at_risk, c.unpaid, coalesce(l.statement_line_ids, '{{}}')
FROM c LEFT JOIN ledger l USING (merchant_id, order_id)
"""
# The close in force for exactly this date and scope, locked for the reopen.
FIND_CLOSE = """
SELECT id FROM book_closes
WHERE reopened_at IS NULL AND business_date = $1 AND merchant_id IS NOT DISTINCT FROM $2
FOR UPDATE
"""
# Adjustments correcting this date that are booked on a date closed since: frozen there, they cannot be
# folded back, so the later date must be reopened first (the books reopen from the latest close back).
FROZEN_ADJUSTMENTS = """
SELECT DISTINCT e.booked_on, e.merchant_id FROM book_entries e
WHERE e.kind = 'adjustment' AND e.folded_by IS NULL AND e.corrects_date = $1
  AND ($2::text IS NULL OR e.merchant_id = $2)
  AND EXISTS (SELECT 1 FROM book_closes c WHERE c.reopened_at IS NULL AND c.business_date = e.booked_on
                                            AND (c.merchant_id IS NULL OR c.merchant_id = e.merchant_id))
ORDER BY e.booked_on, e.merchant_id
"""
REOPEN = """
UPDATE book_closes SET reopened_by = $2, reopened_at = now(), reopen_reason = $3 WHERE id = $1
"""
# Fold the date's entries back: its close entries and the adjustments booked against it since. The date
# shows its figures live again, which now include what those adjustments carried.
FOLD = """
UPDATE book_entries SET folded_by = $1
WHERE folded_by IS NULL AND corrects_date = $2 AND ($3::text IS NULL OR merchant_id = $3)
"""
LIST_CLOSES = """
SELECT c.id, c.business_date, c.merchant_id, c.note, c.closed_by, c.closed_at, c.forced, c.force_reason,
       c.open_mismatches, c.reopened_by, c.reopened_at, c.reopen_reason
FROM book_closes c
WHERE c.business_date BETWEEN $1 AND $2
ORDER BY c.business_date DESC, c.id DESC
LIMIT $3
"""


class ClosingError(OttreconError):
    """The books cannot be closed or reopened as asked."""


class UnacknowledgedMismatches(ClosingError):
    """Mismatches on those dates are not acknowledged yet: acknowledge them, or close with --force and a reason."""

    def __init__(self, mismatches: Sequence[Mismatch]) -> None:
        super().__init__(
            f"{len(mismatches)} unacknowledged mismatch(es) on those dates: acknowledge them "
            "(ottrecon alerts ack ID --note …) or close with --force REASON"
        )
        self.mismatches = list(mismatches)


class ReopenBlocked(ClosingError):
    """Later closed dates carry adjustments of this one: reopen them first."""


@dataclass(frozen=True)
class Mismatch:
    """An open alert of a ledger row on a date being closed."""

    alert_id: int
    kind: str
    merchant_id: str
    order_id: str
    amount_at_risk: int
    business_date: date


@dataclass
class CloseReport:
    """What a close did: dates closed now, dates that were already closed, and the mismatches it closed over."""

    closed: list[date] = field(default_factory=list)
    already_closed: list[date] = field(default_factory=list)
    forced_over: list[Mismatch] = field(default_factory=list)


@dataclass(frozen=True)
class Close:
    """One close of a business date, and its reopening if it was reopened."""

    id: int
    business_date: date
    merchant_id: str | None
    note: str
    closed_by: str
    closed_at: datetime
    forced: bool
    force_reason: str | None
    open_mismatches: int
    reopened_by: str | None
    reopened_at: datetime | None
    reopen_reason: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Close:
        return cls(**dict(row))


def dates(first: date, last: date) -> list[date]:
    """first..last inclusive."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


async def close_dates(
    pool: asyncpg.Pool,
    first: date,
    last: date,
    *,
    merchant_id: str | None,
    note: str,
    actor: str,
    today: date,
    force_reason: str | None = None,
) -> CloseReport:
    """Close business dates first..last for one merchant (or every merchant) in one transaction.

    Refuses (ClosingError) a date that is not over yet (today or later, in the business time zone), an
    empty note, and a close of every merchant while one merchant's close of that date is in force.
    Dates already closed are skipped and reported (so a repeated command does nothing twice). Raises
    UnacknowledgedMismatches, listing them, while open alerts exist for ledger rows on the dates being
    closed, unless force_reason is given: then the close records who forced it, why and over how many.
    """
    if last < first:
        raise ClosingError(f"--to {last} is before {first}")
    if last >= today:
        raise ClosingError(f"{last} is not over yet: only dates before {today} can be closed")
    if not note.strip():
        raise ClosingError("say why in a note (--note)")
    if force_reason is not None and not force_reason.strip():
        raise ClosingError("--force needs a reason")
    report = CloseReport()
    async with translate_errors(), pool.acquire() as conn, conn.transaction():
        await hold_books(conn)
        active = await conn.fetch(ACTIVE_CLOSES, first, merchant_id, last)
        covered = {r["business_date"] for r in active if r["merchant_id"] == merchant_id or r["merchant_id"] is None}
        if merchant_id is None:
            separately = sorted({(r["business_date"], r["merchant_id"]) for r in active if r["merchant_id"]})
            if separately:
                named = ", ".join(f"{day} for {m}" for day, m in separately)
                raise ClosingError(f"closed separately: {named}; reopen those first, then close every merchant")
        wanted = [day for day in dates(first, last) if day not in covered]
        report.already_closed = sorted(covered)
        if not wanted:
            return report
        found = [Mismatch(*r.values()) for r in await conn.fetch(UNACKNOWLEDGED, wanted, merchant_id)]
        if found and force_reason is None:
            raise UnacknowledgedMismatches(found)
        for day in wanted:
            open_here = sum(1 for m in found if m.business_date == day)
            row = await fetch_one(
                conn, INSERT_CLOSE, day, merchant_id, note, actor, force_reason is not None, force_reason, open_here
            )
            await conn.execute(BOOK_CLOSE, row["id"], day, merchant_id)
        report.closed = wanted
        report.forced_over = found
    return report


async def reopen_date(pool: asyncpg.Pool, day: date, *, merchant_id: str | None, reason: str, actor: str) -> Close:
    """Reopen a closed business date (the close of exactly this merchant scope); returns the close, now reopened.

    Folds the date back: its close entries and the adjustments booked against it since no longer count, and
    its summary shows the live figures again (which include what those adjustments carried). Refuses
    (ReopenBlocked) while such an adjustment sits on a date that is closed itself: reopen the later date first.
    The close row keeps who reopened it, when and why.
    """
    if not reason.strip():
        raise ClosingError("say why in a reason (--reason)")
    async with translate_errors(), pool.acquire() as conn, conn.transaction():
        await hold_books(conn)
        found = await conn.fetchrow(FIND_CLOSE, day, merchant_id)
        if found is None:
            scope = f"for {merchant_id}" if merchant_id else "for every merchant"
            raise ClosingError(f"{day} is not closed {scope}")
        blocked = await conn.fetch(FROZEN_ADJUSTMENTS, day, merchant_id)
        if blocked:
            named = ", ".join(f"{r['booked_on']} ({r['merchant_id']})" for r in blocked)
            raise ReopenBlocked(f"adjustments of {day} are booked on closed date(s) {named}: reopen those first")
        await conn.execute(REOPEN, found["id"], actor, reason)
        await conn.execute(FOLD, found["id"], day, merchant_id)
        row = await fetch_one(conn, "SELECT * FROM book_closes WHERE id = $1", found["id"])
    return Close.from_row(row)


async def list_closes(
    pool: asyncpg.Pool, *, date_from: date | None = None, date_to: date | None = None, limit: int = 500
) -> list[Close]:
    """Closes of dates in the range, newest date first, reopened ones included (the audit of closing)."""
    async with translate_errors(), pool.acquire() as conn:
        rows = await conn.fetch(LIST_CLOSES, date_from or date.min, date_to or date.max, limit)
    return [Close.from_row(r) for r in rows]


def format_closes(closes: Sequence[Close], display_tz: Any) -> str:
    """`ottrecon closes list`: one line per close, who closed it, why, and its reopening if any."""
    if not closes:
        return "no closed dates\n"
    lines = []
    for c in closes:
        scope = c.merchant_id or "all merchants"
        when = c.closed_at.astimezone(display_tz).strftime("%Y-%m-%d %H:%M %Z")
        line = f"{c.business_date}  {scope:<14} closed by {c.closed_by} at {when}: {c.note}"
        if c.forced:
            line += f" [FORCED over {c.open_mismatches} open mismatch(es): {c.force_reason}]"
        if c.reopened_at is not None:
            again = c.reopened_at.astimezone(display_tz).strftime("%Y-%m-%d %H:%M %Z")
            line += f" — reopened by {c.reopened_by} at {again}: {c.reopen_reason}"
        lines.append(line)
    return "\n".join(lines) + "\n"
