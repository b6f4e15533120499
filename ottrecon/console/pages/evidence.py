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
from ottrecon.reconciliation.evidence import order_evidence


async def show(request: web.Request) -> web.Response:
    """GET /console/order?merchant_id=&order_id=: everything known about one order."""
    problems: list[str] = []
    merchant_id = text(request.query, "merchant_id", problems)
    order_id = text(request.query, "order_id", problems)
    if problems or merchant_id is None or order_id is None:
        raise BadFilter(problems or ["give both merchant_id and order_id"])
    async with translate_errors(), pool(request).acquire() as conn:
        found, events = await order_evidence(conn, merchant_id, order_id)
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
