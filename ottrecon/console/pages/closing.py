"""Closing the books on the console: who closed which dates, the close and reopen forms (finance role, audited),
and the printable close report of a date or a month (one page per merchant)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from ottpay.strict_json import UNSTORABLE
from ottrecon.console.auth import require_finance
from ottrecon.console.csrf import checked_form
from ottrecon.console.errors import BadFilter, PageError
from ottrecon.console.render import render
from ottrecon.console.web import pool, redirect, session, settings, url
from ottrecon.db import translate_errors
from ottrecon.reconciliation import closing, reports


async def show(request: web.Request) -> web.Response:
    """GET /console/closes: every close, newest date first, with the close and reopen forms for finance."""
    return await _page(request)


async def _page(
    request: web.Request, *, refused: list[closing.Mismatch] | None = None, status: int = 200
) -> web.Response:
    closes = await closing.list_closes(pool(request), limit=200)
    response = render(
        request,
        "closes.html",
        active="closes",
        closes=closes,
        refused=refused or [],
        yesterday=_business_today(request) - timedelta(days=1),
    )
    response.set_status(status)
    return response


async def close(request: web.Request) -> web.Response:
    """POST /console/closes: close dates (date, to, merchant_id, note, force_reason); refused while mismatches
    on them are unacknowledged, listing them, unless a reason to force is given."""
    form = await checked_form(request)
    require_finance(request)
    first = _form_date(form, "date", required=True)
    last = _form_date(form, "to") or first
    assert first is not None and last is not None
    merchant_id = form.get("merchant_id", "").strip() or None
    note = _form_text(form, "note", "A note is required", "Say what was reviewed; it is kept with the close.")
    force = form.get("force_reason", "").strip() or None
    if force is not None and UNSTORABLE.search(force):
        raise PageError(422, "The reason holds characters that cannot be kept", "Retype it without control codes.")
    try:
        report = await closing.close_dates(
            pool(request),
            first,
            last,
            merchant_id=merchant_id,
            note=note,
            actor=session(request).user.name,
            today=_business_today(request),
            force_reason=force,
        )
    except closing.UnacknowledgedMismatches as exc:
        return await _page(request, refused=exc.mismatches, status=409)
    except closing.ClosingError as exc:
        raise PageError(409, "These dates cannot be closed", str(exc)) from exc
    return redirect(url(f"/closes?done={'closed' if report.closed else 'already_closed'}"))


async def reopen(request: web.Request) -> web.Response:
    """POST /console/closes/reopen: reopen one close (date, merchant_id) with a reason; audited on the close."""
    form = await checked_form(request)
    require_finance(request)
    day = _form_date(form, "date", required=True)
    assert day is not None
    reason = _form_text(form, "reason", "A reason is required", "Say why the date is reopened; it is kept.")
    try:
        await closing.reopen_date(
            pool(request),
            day,
            merchant_id=form.get("merchant_id", "").strip() or None,
            reason=reason,
            actor=session(request).user.name,
        )
    except closing.ClosingError as exc:
        raise PageError(409, "This date cannot be reopened", str(exc)) from exc
    return redirect(url("/closes?done=reopened"))


async def report(request: web.Request) -> web.Response:
    """GET /console/close-report?from=&to= | ?month=YYYY-MM [&merchant_id=]: the close report, printable,
    one page per merchant (the same rows as `ottrecon export close-report`)."""
    first, last = _period(request.query)
    merchant_id = request.query.get("merchant_id", "").strip() or None
    async with translate_errors(), pool(request).acquire() as conn:
        rows = [dict(r) for r in await conn.fetch(reports.CLOSE_REPORT, first, last, merchant_id)]
    # Closes of every merchant (no merchant) belong on each merchant's page.
    everyone = [r for r in rows if r["merchant_id"] is None]
    merchants: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        if row["merchant_id"] is not None:
            merchants.setdefault(row["merchant_id"], {}).setdefault(row["section"], []).append(row)
    pages = [
        {"merchant_id": m, "closed": everyone + sections.get("closed", []), **_sections(sections)}
        for m, sections in sorted(merchants.items())
    ]
    return render(request, "close_report.html", active="closes", pages=pages, first=first, last=last, everyone=everyone)


def _sections(sections: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {name: list(sections.get(name, [])) for name in ("totals", "mismatch", "adjustment_in", "adjustment_out")}


def _period(query: Mapping[str, str]) -> tuple[date, date]:
    problems: list[str] = []
    month = query.get("month", "").strip()
    try:
        if month:
            first = date.fromisoformat(f"{month}-01")
            last = date(first.year + first.month // 12, first.month % 12 + 1, 1) - timedelta(days=1)
        else:
            first = date.fromisoformat(query.get("from", ""))
            last = date.fromisoformat(query.get("to", "") or query.get("from", ""))
    except ValueError:
        problems.append("give a month (YYYY-MM), or from (and to) as YYYY-MM-DD")
    if problems:
        raise BadFilter(problems)
    if last < first:
        raise BadFilter(["to is before from"])
    return first, last


def _form_date(form: Mapping[str, str], name: str, *, required: bool = False) -> date | None:
    value = form.get(name, "").strip()
    if not value and not required:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise PageError(422, f"The {name} is not a date", "Give it as YYYY-MM-DD.") from exc


def _form_text(form: Mapping[str, str], name: str, title: str, hint: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise PageError(422, title, hint)
    if UNSTORABLE.search(value):
        raise PageError(422, "The text holds characters that cannot be kept", "Retype it without pasted control codes.")
    return value[:2000]


def _business_today(request: web.Request) -> date:
    return datetime.now(ZoneInfo(settings(request).business_tz)).date()
