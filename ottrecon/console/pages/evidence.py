"""One order's evidence: ledger row, order, payment, callbacks, gateway attempts, refunds, statement lines,
and its alerts with their audit trail and the acknowledge/resolve forms."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ottpay.finish_time import parse_finish_time
from ottrecon.callbacks.verdicts import FINISH_TIME_SKEW_LIMIT
from ottrecon.console.errors import BadFilter, PageError
from ottrecon.console.filters import text
from ottrecon.console.render import render
from ottrecon.console.web import pool
from ottrecon.db import translate_errors

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


async def show(request: web.Request) -> web.Response:
    """GET /console/order?merchant_id=&order_id=: everything known about one order."""
    problems: list[str] = []
    merchant_id = text(request.query, "merchant_id", problems)
    order_id = text(request.query, "order_id", problems)
    if problems or merchant_id is None or order_id is None:
        raise BadFilter(problems or ["give both merchant_id and order_id"])
    key = (merchant_id, order_id)
    async with translate_errors(), pool(request).acquire() as conn:
        found: dict[str, Any] = {
            "ledger": await conn.fetchrow(LEDGER, *key),
            "order": await conn.fetchrow(ORDER, *key),
            "payment": await conn.fetchrow(PAYMENT, *key),
            "callbacks": await conn.fetch(CALLBACKS, *key),
            "attempts": await conn.fetch(ATTEMPTS, *key),
            "refunds": await conn.fetch(REFUNDS, *key),
            "lines": await conn.fetch(STATEMENT_LINES, *key),
            "alerts": await conn.fetch(ALERTS, *key),
        }
        events = await conn.fetch(EVENTS, [a["id"] for a in found["alerts"]])
    if not any(found.values()):
        raise PageError(
            404,
            "Nothing is known about this order",
            f"No order, payment, callback or statement line has merchant {merchant_id} and order {order_id}. "
            "Check both ids, or search the ledger by order id.",
        )
    by_alert: dict[int, list[Any]] = {}
    for event in events:
        by_alert.setdefault(event["alert_id"], []).append(event)
    found["callbacks"] = [_with_skew(dict(c)) for c in found["callbacks"]]
    current = set(found["ledger"]["statement_line_ids"]) if found["ledger"] else set()
    found["lines"] = [dict(line) | {"current": line["id"] in current} for line in found["lines"]]
    return render(
        request,
        "order.html",
        active="alerts",
        merchant_id=merchant_id,
        order_id=order_id,
        events=by_alert,
        **found,
    )


def _with_skew(callback: dict[str, Any]) -> dict[str, Any]:
    """The finish time as read (Beijing time unless it names a zone) and how far it is from the receipt.

    A skew over FINISH_TIME_SKEW_LIMIT is flagged on the page, as the worker counts it in
    ottrecon_callbacks_finish_time_skewed_total: a misread zone shows as a 12-13 hour skew.
    """
    parsed = parse_finish_time(callback["finish_time"]) if callback["finish_time"] else None
    skew = parsed - callback["received_at"] if parsed is not None else None
    return callback | {
        "finish_parsed": parsed,
        "skew": skew,
        "skewed": skew is not None and abs(skew) > FINISH_TIME_SKEW_LIMIT,
    }
