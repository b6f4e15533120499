"""Everything known about one order, from every source, for the console's evidence page (reads only)."""

from __future__ import annotations

from typing import Any

import asyncpg

from ottrecon import db

# Every query reads one (merchant, order) through an index on those columns; lists are capped.
LEDGER = "SELECT * FROM ledger WHERE merchant_id = $1 AND order_id = $2"
ORDER = "SELECT * FROM orders WHERE merchant_id = $1 AND order_id = $2"
PAYMENT = "SELECT * FROM payments WHERE merchant_id = $1 AND order_id = $2"
# Callbacks' verified plaintext is jsonb; the page shows the payment fields from it (amounts as cents when they
# are plain digits, which every recorded payment callback's are; anything else shows as missing, never an error).
CALLBACKS = """
SELECT id, rsp_code, received_at, recorded_at, signkey_index, md5,
       CASE WHEN data->>'amount' ~ '^[0-9]{1,15}$' THEN (data->>'amount')::bigint END AS amount,
       CASE WHEN coalesce(trim(data->>'tip'), '') = '' THEN 0
            WHEN trim(data->>'tip') ~ '^[0-9]{1,15}$' THEN trim(data->>'tip')::bigint END AS tip,
       data->>'bizpay_order_id' AS bizpay_order_id,
       data->>'finish_time' AS finish_time, data->>'order_status' AS order_status
FROM callbacks WHERE merchant_id = $1 AND order_id = $2 ORDER BY id LIMIT 200
"""
# Every request sent to the gateway for the order (submissions, status queries, refunds).
ATTEMPTS = """
SELECT a.id, a.action, a.outcome, a.rsp_code, a.rsp_msg, a.error, a.sent, a.gateway_status, a.not_found,
       a.started_at, a.latency_ms, a.refund_ref, a.data::text AS data
FROM submission_attempts a JOIN orders o ON o.id = a.order_ref
WHERE o.merchant_id = $1 AND o.order_id = $2 ORDER BY a.id LIMIT 500
"""
REFUNDS = """
SELECT r.* FROM refunds r JOIN orders o ON o.id = r.order_ref
WHERE o.merchant_id = $1 AND o.order_id = $2 ORDER BY r.id
"""
STATEMENT_LINES = """
SELECT s.*, i.file_name FROM statement_lines s JOIN statement_imports i ON i.id = s.import_id
WHERE s.merchant_id = $1 AND s.order_id = $2 ORDER BY s.id LIMIT 200
"""
# Open alerts first, then acknowledged, then resolved (alerts_merchant_order_idx).
ALERTS = """
SELECT * FROM alerts WHERE merchant_id = $1 AND order_id = $2
ORDER BY CASE status WHEN 'open' THEN 0 WHEN 'acknowledged' THEN 1 ELSE 2 END, id
"""
EVENTS = "SELECT * FROM alert_events WHERE alert_id = ANY ($1::int8[]) ORDER BY id"


# Where the order is booked in closed books (decision 0031): its close entries and adjustments, folded ones too.
BOOKS = """
SELECT kind, reason, corrects_date, booked_on, channel, payments, gross, tips, refunds, fees,
       gross + tips - refunds - fees AS net, mismatches, amount_at_risk, booked_at, folded_by IS NOT NULL AS folded
FROM book_entries WHERE merchant_id = $1 AND order_id = $2
ORDER BY entry_no
"""


async def order_evidence(
    conn: db.Connection, merchant_id: str, order_id: str
) -> tuple[dict[str, Any], list[asyncpg.Record]]:
    """The order's ledger row, order, payment, callbacks, gateway attempts, refunds, statement lines, alerts and
    book entries (by name), and the alerts' events; every read goes through an index on (merchant, order)."""
    key = (merchant_id, order_id)
    found: dict[str, Any] = {
        "ledger": await conn.fetchrow(LEDGER, *key),
        "order": await conn.fetchrow(ORDER, *key),
        "payment": await conn.fetchrow(PAYMENT, *key),
        "callbacks": await conn.fetch(CALLBACKS, *key),
        "attempts": await conn.fetch(ATTEMPTS, *key),
        "refunds": await conn.fetch(REFUNDS, *key),
        "lines": await conn.fetch(STATEMENT_LINES, *key),
        "alerts": await conn.fetch(ALERTS, *key),
        "books": await conn.fetch(BOOKS, *key),
    }
    events = await conn.fetch(EVENTS, [a["id"] for a in found["alerts"]])
    return found, list(events)
