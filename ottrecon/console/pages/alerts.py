"""Mismatches and alerts: one status at a time (open first), acknowledge or resolve with a note (audited)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import urlencode

from aiohttp import web

from ottpay.strict_json import UNSTORABLE
from ottrecon.console import paging
from ottrecon.console.auth import require_finance
from ottrecon.console.csrf import checked_form
from ottrecon.console.errors import BadFilter, PageError
from ottrecon.console.filters import choice, positive_int, text
from ottrecon.console.render import render
from ottrecon.console.web import pool, redirect, session, url
from ottrecon.db import fetch_one, translate_errors
from ottrecon.reconciliation import alerts as alert_admin
from ottrecon.reconciliation.statuses import AlertKind

STATUSES = alert_admin.STATUSES  # open, acknowledged, resolved: the tabs, in this order
KINDS = tuple(AlertKind)  # the ledger's mismatch statuses, then the statement differences


async def show(request: web.Request) -> web.Response:
    """GET /console/alerts?status=open|acknowledged|resolved&kind=&merchant_id=&after="""
    problems: list[str] = []
    status = choice(request.query, "status", STATUSES, problems) or "open"
    kind = choice(request.query, "kind", KINDS, problems)
    merchant_id = text(request.query, "merchant_id", problems)
    if problems:
        raise BadFilter(problems)
    after = paging.decode(request.query.get("after"), (datetime, int))
    sql, args = alert_admin.page_query(status, kind, merchant_id, after, paging.PAGE_SIZE + 1)
    async with translate_errors(), pool(request).acquire() as conn:
        rows = [dict(r) for r in await conn.fetch(sql, *args)]
        counts = {r["status"]: dict(r) for r in await conn.fetch(alert_admin.COUNTS_BY_STATUS)}
    more = len(rows) > paging.PAGE_SIZE
    rows = rows[: paging.PAGE_SIZE]
    next_cursor = paging.encode((rows[-1]["first_seen_at"], rows[-1]["id"])) if more else None
    params = {"status": status, "kind": kind or "", "merchant_id": merchant_id or ""}
    return render(
        request,
        "alerts.html",
        active="alerts",
        rows=rows,
        counts=counts,
        tab=status,
        statuses=STATUSES,
        kinds=KINDS,
        params=params,
        next_cursor=next_cursor,
        is_first_page=after is None,
    )


async def acknowledge(request: web.Request) -> web.Response:
    """POST /console/alerts/{alert_id}/acknowledge: open -> acknowledged, with the user and their note."""
    return await _change(request, alert_admin.acknowledge, "acknowledged")


async def resolve(request: web.Request) -> web.Response:
    """POST /console/alerts/{alert_id}/resolve: -> resolved (manual), with the user and why."""
    return await _change(request, alert_admin.resolve, "resolved")


async def _change(
    request: web.Request, change: Callable[..., Awaitable[alert_admin.AlertView]], done: str
) -> web.Response:
    form = await checked_form(request)
    require_finance(request)
    alert_id = positive_int(request.match_info["alert_id"], "the alert id")
    note = form.get("note", "").strip()
    if not note:
        raise PageError(422, "A note is required", "Go back and say what you found or did; it is kept with the alert.")
    if UNSTORABLE.search(note):
        raise PageError(422, "The note holds characters that cannot be kept", "Retype it without pasted control codes.")
    actor = session(request).user.name
    try:
        await change(pool(request), alert_id, actor=actor, note=note[:2000])
    except alert_admin.AlertNotFound as exc:
        raise PageError(404, "No such alert", "It may have been removed. Go back to the alerts list.") from exc
    except alert_admin.AlertStateError as exc:
        raise PageError(409, "The alert changed meanwhile", f"{exc}. Reload its page to see who changed it.") from exc
    async with translate_errors(), pool(request).acquire() as conn:
        key = await fetch_one(conn, alert_admin.ALERT_ORDER, alert_id)
    where = urlencode({"merchant_id": key["merchant_id"], "order_id": key["order_id"], "done": done})
    return redirect(url(f"/order?{where}#alert-{alert_id}"))
