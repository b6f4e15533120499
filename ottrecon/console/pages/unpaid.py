"""Unpaid orders by age: orders still waiting for money, in buckets by how long ago they were created."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from ottrecon.console import paging
from ottrecon.console.errors import BadFilter
from ottrecon.console.filters import choice, text
from ottrecon.console.render import render
from ottrecon.console.web import pool
from ottrecon.db import translate_errors
from ottrecon.payments import store


async def show(request: web.Request) -> web.Response:
    """GET /console/unpaid?bucket=&merchant_id=&after="""
    problems: list[str] = []
    bucket = choice(request.query, "bucket", tuple(key for key, _, _ in store.UNPAID_BUCKETS), problems)
    merchant_id = text(request.query, "merchant_id", problems)
    if problems:
        raise BadFilter(problems)
    after = paging.decode(request.query.get("after"), (datetime, int))
    sql, args = store.unpaid_page(bucket, merchant_id, after, paging.PAGE_SIZE + 1)
    async with translate_errors(), pool(request).acquire() as conn:
        summary = {r["bucket"]: dict(r) for r in await conn.fetch(store.UNPAID_SUMMARY, list(store.WAITING))}
        rows = [dict(r) for r in await conn.fetch(sql, *args)]
    more = len(rows) > paging.PAGE_SIZE
    rows = rows[: paging.PAGE_SIZE]
    next_cursor = paging.encode((rows[-1]["created_at"], rows[-1]["id"])) if more else None
    buckets = [
        {"key": key, "label": label, **summary.get(key, {"n": 0, "expected": 0, "given_up": 0})}
        for key, label, _ in store.UNPAID_BUCKETS
    ]
    return render(
        request,
        "unpaid.html",
        active="unpaid",
        buckets=buckets,
        bucket=bucket,
        rows=rows,
        params={"bucket": bucket or "", "merchant_id": merchant_id or ""},
        next_cursor=next_cursor,
        is_first_page=after is None,
    )
