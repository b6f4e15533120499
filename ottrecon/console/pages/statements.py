"""Statement import: upload a CSV, import it (reconciliation.statements), reconcile, show the differences it made."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import date
from pathlib import Path

from aiohttp import web

from ottrecon.console import paging
from ottrecon.console.auth import require_finance
from ottrecon.console.errors import PageError
from ottrecon.console.filters import positive_int
from ottrecon.console.offload import OFFLOAD_SLOTS, run_with_private_pool
from ottrecon.console.render import render
from ottrecon.console.upload import MAX_UPLOAD_BYTES, receive
from ottrecon.console.web import database_url, pool, redirect, session, settings, url
from ottrecon.db import translate_errors
from ottrecon.reconciliation import overview_queries, statements
from ottrecon.reconciliation.layouts import StatementError, StatementLayout
from ottrecon.reconciliation.reconcile import reconcile_pending
from ottrecon.reconciliation.statements import import_statement

# Reconcile in the request for at most this long; the workers carry on with anything left.
RECONCILE_BUDGET_S = 20.0


async def show(request: web.Request) -> web.Response:
    """GET /console/statements: the upload form and the latest imports."""
    return await _form_page(request, problems=[], status=200)


async def upload(request: web.Request) -> web.Response:
    """POST /console/statements (multipart): import, reconcile, then show the import's differences."""
    require_finance(request)
    console = settings(request)
    with tempfile.TemporaryDirectory(prefix="ottrecon-statement-") as directory:
        received = await receive(request, Path(directory), session(request).csrf_token)
        if received.path is None or received.size == 0:
            return await _form_page(request, problems=["choose a CSV file to import"], status=422)
        try:
            layout, period = _options(received.fields)
            merchants = statements.split_merchants([received.fields.get("merchants", "")])
            path = received.path
            with request.config_dict[OFFLOAD_SLOTS].claim():
                report = await run_with_private_pool(
                    database_url(request),
                    lambda db: import_statement(
                        db, path, layout, business_tz=console.business_tz, period=period, merchants=merchants
                    ),
                )
        except StatementError as exc:
            return await _form_page(request, problems=[str(exc).split("\n")[0], *exc.problems], status=422)
    async with translate_errors(), pool(request).acquire() as conn:
        span = (report.period_start, report.period_end, list(report.merchant_ids))
        import_id = report.import_id or await conn.fetchval(statements.IMPORT_BY_SPAN, received.sha256, *span)
    await _reconcile(request)
    done = "already_imported" if report.already_imported else "imported"
    return redirect(url(f"/statements/{import_id}?done={done}"))


async def detail(request: web.Request) -> web.Response:
    """GET /console/statements/{import_id}: the import and the differences in its period."""
    import_id = positive_int(request.match_info["import_id"], "the import id")
    after = paging.decode(request.query.get("after"), (date, str, str))
    async with translate_errors(), pool(request).acquire() as conn:
        imported = await conn.fetchrow(statements.IMPORT_BY_ID, import_id)
        if imported is None:
            raise PageError(404, "No such statement import", "Pick one from the list of imports.")
        span = (imported["merchant_ids"], imported["period_start"], imported["period_end"])
        key = after or (date.min, "", "")
        rows = [
            dict(r) for r in await conn.fetch(overview_queries.STATEMENT_DIFFERENCES, *span, *key, paging.PAGE_SIZE + 1)
        ]
        counts = [dict(r) for r in await conn.fetch(overview_queries.STATEMENT_STATUS_COUNTS, *span)]
        dirty = await conn.fetchval(overview_queries.DIRTY_LEFT)
    more = len(rows) > paging.PAGE_SIZE
    rows = rows[: paging.PAGE_SIZE]
    last = rows[-1] if rows else None
    next_cursor = (
        paging.encode((last["business_date"], last["merchant_id"], last["order_id"])) if more and last else None
    )
    return render(
        request,
        "statement.html",
        active="statements",
        imported=dict(imported),
        rows=rows,
        counts=counts,
        reconciling=dirty > 0,
        next_cursor=next_cursor,
        is_first_page=after is None,
    )


async def _reconcile(request: web.Request) -> None:
    """Reconcile what the import marked changed, batch by batch, within the time budget."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECONCILE_BUDGET_S
    while loop.time() < deadline:
        done = await reconcile_pending(pool(request), business_tz=settings(request).business_tz, max_batches=1)
        if done.keys == 0:
            return


def _options(fields: dict[str, str]) -> tuple[StatementLayout, tuple[date, date] | None]:
    amounts = fields.get("amounts", "cents").strip() or "cents"
    spec = fields.get("columns", "").strip()
    layout = StatementLayout.from_spec(spec, amounts) if spec else StatementLayout(amounts=amounts)
    raw = (fields.get("period_from", "").strip(), fields.get("period_to", "").strip())
    if not any(raw):
        return layout, None
    try:
        start, end = (date.fromisoformat(x) for x in raw)
    except ValueError as exc:
        message = "give both period dates as YYYY-MM-DD, or neither"
        raise StatementError([message], "invalid statement period:") from exc
    return layout, (start, end)


async def _form_page(request: web.Request, *, problems: list[str], status: int) -> web.Response:
    async with translate_errors(), pool(request).acquire() as conn:
        imports = [dict(r) for r in await conn.fetch(statements.RECENT_IMPORTS)]
    return render(
        request,
        "statements.html",
        status=status,
        active="statements",
        imports=imports,
        problems=problems,
        max_mib=MAX_UPLOAD_BYTES // (1024 * 1024),
    )
