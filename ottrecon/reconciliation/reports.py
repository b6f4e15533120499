"""Streamed CSV reports of the reconciled ledger: every row, a daily summary, mismatches, adjustments, close reports.

The raw tables (payments, rejected callbacks) are exported by raw_exports.py.

Amounts are integer cents, as everywhere in ottrecon (never floats); finance tools divide by 100.
Every report streams inside a read-only transaction, so memory stays constant whatever the number of
rows: through a server-side cursor, or for the ledger (millions of rows) through COPY, its cells rendered
by Postgres exactly as the cursor path renders them (EXPORT_LEDGER_CSV).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TextIO

import asyncpg

from ottrecon.progress import Progress
from ottrecon.reconciliation.csv_writer import copy_csv, sql_date_cell, sql_text_cell, sql_time_cell, write_csv

# The ledger report's columns (the CSV header); the ledger and mismatches queries select these in order.
LEDGER_COLUMNS = (
    "merchant_id",
    "order_id",
    "business_date",
    "kind",
    "channel",
    "order_status",
    "expected_amount",
    "expected_tip",
    "received_amount",
    "received_tip",
    "refunded_amount",
    "fee",
    "channel_payment_ids",
    "callback_count",
    "paid_source",
    "recon_status",
    "statement_status",
    "statement_amount",
    "statement_tip",
    "statement_refund",
    "statement_import_ids",
    "amount_at_risk",
    "statement_amount_at_risk",
    "created_at",
    "paid_at",
)
LEDGER_SELECT = """
SELECT l.merchant_id, l.order_id, l.business_date, l.kind, l.channel, l.order_status, l.expected_amount,
       l.expected_tip, l.received_amount, l.received_tip, l.refunded_amount, l.fee,
       array_to_string(l.channel_payment_ids, ';'), l.callback_count, l.paid_source, l.recon_status,
       l.statement_status, l.statement_amount, l.statement_tip, l.statement_refund,
       array_to_string(l.statement_import_ids, ';'), l.amount_at_risk, l.statement_amount_at_risk, l.created_at,
       l.paid_at
"""
# A row's statement difference needs a person (docs/RECONCILIATION.md): every statement status but matched.
STATEMENT_MISMATCH = (
    "l.statement_status IN ('not_in_statement', 'not_in_ledger', 'amount_differs', 'duplicate_settlement', "
    "'refund_differs')"
)
# Filters: $1 first and $2 last business date (inclusive), $3 merchant. Open ends are sent as date.min /
# date.max (asyncpg: -infinity / infinity), not NULL, so even a generic plan keeps an index range on the
# date: the console's ledger_keyset_idx / ledger_merchant_keyset_idx (sql/0005).
_FILTER = "l.business_date BETWEEN $1 AND $2 AND ($3::text IS NULL OR l.merchant_id = $3)"
# A ledger row needing a person: a reconciliation mismatch or a statement difference. Literal SQL, never a
# parameter: it repeats the predicates of the partial indexes ledger_recon_status_idx / ledger_statement_status_idx.
NEEDS_A_PERSON = f"(l.recon_status NOT IN ('matched', 'pending') OR {STATEMENT_MISMATCH})"

# Every ledger row in the filter, in key order (that of ledger_keyset_idx, which can stream it unsorted).
# `export ledger` adds where each order is booked (decision 0031): closed_in, the closed dates its figures are
# frozen in; adjustments, each adjustment booked for it since ("corrects DATE on DATE REASON net CENTS").
LEDGER_EXPORT_COLUMNS = (*LEDGER_COLUMNS, "closed_in", "adjustments")
# Dates through to_char, so the text does not depend on the session's DateStyle; NULL when there is nothing.
# Each cell starts with a digit or "corrects" and is never '': as csv_cell would write it, on either path.
# Both cells come from one probe of book_entries per ledger row (a LATERAL join, which keeps the ledger's index
# order): two scalar subqueries probed it twice, and with every date closed the export took 1/0.70 as long
# (bench/export_booked.py; the same with open books). Join it with BOOKED_JOIN, select it with BOOKED_SELECT.
BOOKED_JOIN = """
LEFT JOIN LATERAL (
    SELECT string_agg(DISTINCT to_char(e.corrects_date, 'YYYY-MM-DD'), ';') FILTER (WHERE e.kind = 'close')
               AS closed_in,
           string_agg(format('corrects %s on %s %s net %s', to_char(e.corrects_date, 'YYYY-MM-DD'),
                             to_char(e.booked_on, 'YYYY-MM-DD'), e.reason, e.gross + e.tips - e.refunds - e.fees),
                      ';' ORDER BY e.entry_no) FILTER (WHERE e.kind = 'adjustment') AS adjustments
    FROM book_entries e
    WHERE e.merchant_id = l.merchant_id AND e.order_id = l.order_id AND e.folded_by IS NULL
) booked ON true"""
BOOKED_SELECT = ",\n       booked.closed_in, booked.adjustments"
EXPORT_LEDGER = f"""{LEDGER_SELECT}{BOOKED_SELECT}
FROM ledger l{BOOKED_JOIN}
WHERE {_FILTER}
ORDER BY l.business_date, l.merchant_id, l.order_id
"""


# The ledger columns holding text (the rest are integers, the date, the times and the two id lists).
_LEDGER_TEXT_COLUMNS = (
    "merchant_id",
    "order_id",
    "kind",
    "channel",
    "order_status",
    "paid_source",
    "recon_status",
    "statement_status",
)


def _ledger_cell(column: str) -> str:
    if column in ("created_at", "paid_at"):
        return sql_time_cell(f"l.{column}")
    if column in ("channel_payment_ids", "statement_import_ids"):
        return sql_text_cell(f"array_to_string(l.{column}, ';')")
    if column in _LEDGER_TEXT_COLUMNS:
        return sql_text_cell(f"l.{column}")
    if column == "business_date":
        return sql_date_cell(f"l.{column}")
    return f"l.{column}"  # the integers: Postgres's text output is Python's str()


# The ledger report rendered by Postgres for COPY … TO STDOUT (FORMAT csv): cell for cell what write_csv writes
# for EXPORT_LEDGER, so `export ledger` skips decoding a million rows in Python. An empty text is sent as NULL
# (COPY would quote it as "", csv.writer writes nothing).
# tests/integration/test_ledger_export_bytes.py holds the two paths to identical bytes on every tricky value.
# closed_in and adjustments need no rendering: NULL without entries (never ''), and they start with a digit or
# "corrects", never with a formula prefix.
EXPORT_LEDGER_CSV = f"""
SELECT {", ".join(_ledger_cell(column) for column in LEDGER_COLUMNS)}{BOOKED_SELECT}
FROM ledger l{BOOKED_JOIN}
WHERE {_FILTER}
ORDER BY l.business_date, l.merchant_id, l.order_id
"""

# A summary row's figures (docs/RECONCILIATION.md, "Daily summary"), in the summary and the adjustments alike.
FIGURE_COLUMNS = ("payments", "gross", "tips", "refunds", "fees", "net", "mismatches", "amount_at_risk", "unpaid")
SUMMARY_COLUMNS = ("business_date", "merchant_id", "channel", *FIGURE_COLUMNS, "entry", "corrects_date", "reason")
# Active closes cover (date, merchant) pairs; a close with no merchant covers every merchant.
CLOSED = """EXISTS (SELECT 1 FROM book_closes c WHERE c.reopened_at IS NULL AND c.business_date = l.business_date
                     AND (c.merchant_id IS NULL OR c.merchant_id = l.merchant_id))"""
# Book entries in the filter, by the date they are booked on.
_ENTRY_FILTER = "l.folded_by IS NULL AND l.booked_on BETWEEN $1 AND $2 AND ($3::text IS NULL OR l.merchant_id = $3)"
# One row per (business date, merchant, channel) that has a ledger row or a refund booked (docs/RECONCILIATION.md,
# "Daily summary"; the policy: decision 0022), entry 'day'. payments/gross/tips: rows with a received amount (orders
# paid and orphan payments) dated that day; refunds: refunds that happened that day, whatever the payment's date, so
# a refund never rewrites a closed day; fees: the statement's fees of those payments (a fee on a line we never
# received is part of that line's not_in_ledger finding, not of our fees). net = gross + tips - refunds - fees.
# mismatches: rows needing a person; amount_at_risk: both at-risk columns summed; unpaid: recon_status unpaid.
# A closed date (decision 0031) shows instead the figures its close booked, frozen, and every date shows the
# adjustments booked on it, one row per (merchant, channel, corrected date, reason), entry 'adjustment'.
DAILY_SUMMARY = f"""
SELECT business_date, merchant_id, channel, payments, gross, tips, refunds, fees,
       gross + tips - refunds - fees AS net, mismatches, amount_at_risk, unpaid, entry, corrects_date, reason
FROM (
    SELECT business_date, merchant_id, channel,
           coalesce(sum(payments), 0)::int8 AS payments, coalesce(sum(gross), 0)::int8 AS gross,
           coalesce(sum(tips), 0)::int8 AS tips, coalesce(sum(refunds), 0)::int8 AS refunds,
           coalesce(sum(fees), 0)::int8 AS fees, coalesce(sum(mismatches), 0)::int8 AS mismatches,
           coalesce(sum(amount_at_risk), 0)::int8 AS amount_at_risk, coalesce(sum(unpaid), 0)::int8 AS unpaid,
           'day' AS entry, NULL::date AS corrects_date, NULL::text AS reason
    FROM (
        SELECT l.business_date, l.merchant_id, l.channel,
               count(*) FILTER (WHERE l.received_amount IS NOT NULL) AS payments,
               sum(l.received_amount) AS gross,
               sum(l.received_tip) AS tips,
               0 AS refunds,
               sum(l.fee) FILTER (WHERE l.received_amount IS NOT NULL) AS fees,
               count(*) FILTER (WHERE {NEEDS_A_PERSON}) AS mismatches,
               sum(l.amount_at_risk + l.statement_amount_at_risk) AS amount_at_risk,
               count(*) FILTER (WHERE l.recon_status = 'unpaid') AS unpaid
        FROM ledger l WHERE {_FILTER} AND NOT {CLOSED}
        GROUP BY l.business_date, l.merchant_id, l.channel
        UNION ALL
        SELECT l.business_date, l.merchant_id, l.channel, 0, 0, 0, sum(l.amount), 0, 0, 0, 0
        FROM ledger_refunds l WHERE {_FILTER} AND NOT {CLOSED}
        GROUP BY l.business_date, l.merchant_id, l.channel
    ) parts
    GROUP BY business_date, merchant_id, channel
    UNION ALL
    SELECT l.booked_on, l.merchant_id, l.channel, sum(l.payments)::int8, sum(l.gross)::int8, sum(l.tips)::int8,
           sum(l.refunds)::int8, sum(l.fees)::int8, sum(l.mismatches)::int8, sum(l.amount_at_risk)::int8,
           sum(l.unpaid)::int8,
           -- A close's entries are the date's own row, as it was shown when it was closed.
           CASE l.kind WHEN 'close' THEN 'day' ELSE 'adjustment' END,
           CASE l.kind WHEN 'close' THEN NULL ELSE l.corrects_date END, l.reason
    FROM book_entries l WHERE {_ENTRY_FILTER}
    GROUP BY l.booked_on, l.merchant_id, l.channel, l.kind, l.corrects_date, l.reason
) daily
"""
# Per date, merchant and channel: the day's row, then its adjustments (entry 'day' sorts after 'adjustment').
EXPORT_SUMMARY = f"""{DAILY_SUMMARY}
ORDER BY business_date, merchant_id, channel NULLS LAST, entry DESC, corrects_date, reason
"""

MISMATCH_COLUMNS = (*LEDGER_COLUMNS, "alert_status")
# Rows needing a person, largest money at risk first. alert_status: of the alerts for this row's current
# mismatch kinds (its recon_status; its statement_status, amount_differs as statement_amount_differs and
# refund_differs as statement_refund_differs),
# the most pressing status: open, else acknowledged, else resolved (a manual resolution the reconciler
# keeps); empty when there is no such alert. Looked up through alerts_kind_order_key.
EXPORT_MISMATCHES = f"""{LEDGER_SELECT},
       a.status
FROM ledger l
LEFT JOIN LATERAL (
    SELECT a.status FROM alerts a
    WHERE a.merchant_id = l.merchant_id AND a.order_id = l.order_id
      AND a.kind IN (l.recon_status,
                     CASE l.statement_status WHEN 'amount_differs' THEN 'statement_amount_differs'
                                             WHEN 'refund_differs' THEN 'statement_refund_differs'
                                             ELSE l.statement_status END)
    ORDER BY CASE a.status WHEN 'open' THEN 0 WHEN 'acknowledged' THEN 1 ELSE 2 END
    LIMIT 1
) a ON true
WHERE {_FILTER}
  AND {NEEDS_A_PERSON}
ORDER BY l.amount_at_risk + l.statement_amount_at_risk DESC, l.business_date, l.merchant_id, l.order_id
"""

ADJUSTMENT_COLUMNS = (
    "booked_on",
    "merchant_id",
    "order_id",
    "channel",
    "corrects_date",
    "reason",
    *FIGURE_COLUMNS,
    "booked_at",
)
# Every adjustment in force booked on a date in the filter, one row per order, channel and corrected date.
EXPORT_ADJUSTMENTS = f"""
SELECT l.booked_on, l.merchant_id, l.order_id, l.channel, l.corrects_date, l.reason, l.payments, l.gross, l.tips,
       l.refunds, l.fees, l.gross + l.tips - l.refunds - l.fees, l.mismatches, l.amount_at_risk, l.unpaid, l.booked_at
FROM book_entries l WHERE l.kind = 'adjustment' AND {_ENTRY_FILTER}
ORDER BY l.booked_on, l.merchant_id, l.order_id, l.entry_no
"""
CLOSE_REPORT_COLUMNS = (
    "merchant_id",
    "section",
    "business_date",
    "channel",
    "order_id",
    "payments",
    "gross",
    "tips",
    "refunds",
    "fees",
    "net",
    "amount_at_risk",
    "corrects_date",
    "booked_on",
    "detail",
    "status",
    "note",
    "who",
    "at",
)
# The close report of business dates $1..$2 (a day or a month), one merchant ($3) or all, per merchant:
#   closed      each close of a date in the period (for every merchant: merchant_id empty): who, when, why;
#   totals      per channel, the summary's rows of the period added up, its adjustments included;
#   mismatch    ledger rows of the period needing a person, with their alert (open: carried open;
#               acknowledged, resolved) and the latest note on it;
#   adjustment_in   adjustments booked on the period's dates (correcting earlier closed dates);
#   adjustment_out  adjustments of the period's dates booked later (after they were closed).
CLOSE_REPORT = f"""
SELECT merchant_id, section, business_date, channel, order_id, payments, gross, tips, refunds, fees, net,
       amount_at_risk, corrects_date, booked_on, detail, status, note, who, at
FROM (
    SELECT c.merchant_id, 'closed' AS section, 1 AS rank, c.business_date, NULL::text AS channel,
           NULL::text AS order_id, NULL::int8 AS payments, NULL::int8 AS gross, NULL::int8 AS tips,
           NULL::int8 AS refunds, NULL::int8 AS fees, NULL::int8 AS net, NULL::int8 AS amount_at_risk,
           NULL::date AS corrects_date, NULL::date AS booked_on,
           CASE WHEN c.forced THEN format('forced over %s open mismatch(es): %s', c.open_mismatches, c.force_reason)
                WHEN c.reopened_at IS NOT NULL THEN 'reopened' ELSE '' END AS detail,
           CASE WHEN c.reopened_at IS NULL THEN 'closed' ELSE 'reopened' END AS status,
           concat_ws(' / reopened: ', c.note, c.reopen_reason) AS note,
           concat_ws(' / reopened by ', c.closed_by, c.reopened_by) AS who, c.closed_at AS at
    FROM book_closes c
    WHERE c.business_date BETWEEN $1 AND $2 AND ($3::text IS NULL OR c.merchant_id IS NULL OR c.merchant_id = $3)
    UNION ALL
    SELECT merchant_id, 'totals', 2, NULL, channel, NULL, sum(payments)::int8, sum(gross)::int8, sum(tips)::int8,
           sum(refunds)::int8, sum(fees)::int8, sum(net)::int8, sum(amount_at_risk)::int8, NULL, NULL,
           to_char($1::date, 'YYYY-MM-DD') || ' to ' || to_char($2::date, 'YYYY-MM-DD'), NULL, NULL, NULL, NULL
    FROM ({DAILY_SUMMARY}) days
    GROUP BY merchant_id, channel
    UNION ALL
    SELECT l.merchant_id, 'mismatch', 3, l.business_date, l.channel, l.order_id, NULL, l.received_amount,
           l.received_tip, NULL, l.fee, NULL, l.amount_at_risk + l.statement_amount_at_risk, NULL, NULL,
           concat_ws(' / ', CASE WHEN l.recon_status NOT IN ('matched', 'pending') THEN l.recon_status END,
                     CASE WHEN {STATEMENT_MISMATCH} THEN 'statement ' || l.statement_status END),
           coalesce(a.status, 'no alert'), a.note, a.actor, a.at
    FROM ledger l
    LEFT JOIN LATERAL (
        SELECT a.status, e.note, e.actor, e.at FROM alerts a
        LEFT JOIN LATERAL (SELECT note, actor, at FROM alert_events WHERE alert_id = a.id AND actor <> 'reconciler'
                           ORDER BY id DESC LIMIT 1) e ON true
        WHERE a.merchant_id = l.merchant_id AND a.order_id = l.order_id
        ORDER BY CASE a.status WHEN 'open' THEN 0 WHEN 'acknowledged' THEN 1 ELSE 2 END, a.id
        LIMIT 1
    ) a ON true
    WHERE {_FILTER} AND {NEEDS_A_PERSON}
    UNION ALL
    SELECT l.merchant_id, CASE WHEN l.booked_on BETWEEN $1 AND $2 THEN 'adjustment_in' ELSE 'adjustment_out' END,
           CASE WHEN l.booked_on BETWEEN $1 AND $2 THEN 4 ELSE 5 END, l.booked_on, l.channel, l.order_id, l.payments,
           l.gross, l.tips, l.refunds, l.fees, l.gross + l.tips - l.refunds - l.fees, l.amount_at_risk,
           l.corrects_date, l.booked_on, l.reason, NULL, NULL, NULL, l.booked_at
    FROM book_entries l
    WHERE l.kind = 'adjustment' AND l.folded_by IS NULL AND ($3::text IS NULL OR l.merchant_id = $3)
      AND (l.booked_on BETWEEN $1 AND $2 OR l.corrects_date BETWEEN $1 AND $2)
) report
ORDER BY merchant_id NULLS FIRST, rank, business_date, channel NULLS LAST, order_id, corrects_date
"""

REPORTS: dict[str, tuple[str, Sequence[str]]] = {
    "ledger": (EXPORT_LEDGER, LEDGER_EXPORT_COLUMNS),
    "summary": (EXPORT_SUMMARY, SUMMARY_COLUMNS),
    "mismatches": (EXPORT_MISMATCHES, MISMATCH_COLUMNS),
    "adjustments": (EXPORT_ADJUSTMENTS, ADJUSTMENT_COLUMNS),
    "close-report": (CLOSE_REPORT, CLOSE_REPORT_COLUMNS),
}
# Reports whose cells Postgres renders itself (COPY … CSV): the ledger, the one that reaches millions of rows.
RENDERED_BY_POSTGRES = {"ledger": EXPORT_LEDGER_CSV}


async def export_report(
    pool: asyncpg.Pool,
    what: str,
    out: TextIO,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    merchant_id: str | None = None,
    fetch_size: int = 5000,
    progress: Progress | None = None,
) -> int:
    """Write a header and every row of the named report (ledger, summary, mismatches) to out.

    Filters: business dates date_from..date_to inclusive (open-ended when None), one merchant.
    Returns the number of rows written (the header not counted). Read-only, so safe to run at
    any time; rows stream through COPY (the ledger) or a server-side cursor, fetch_size at a time. Raises KeyError for
    an unknown report, DatabaseUnavailable when Postgres cannot be reached.
    """
    query, columns = REPORTS[what]
    args = (date_from or date.min, date_to or date.max, merchant_id)
    if what in RENDERED_BY_POSTGRES:
        return await copy_csv(pool, out, columns, RENDERED_BY_POSTGRES[what], args, progress)
    return await write_csv(pool, out, columns, query, args, fetch_size, progress)
