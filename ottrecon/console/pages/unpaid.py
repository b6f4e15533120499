"""Unpaid orders by age: orders still waiting for money, in buckets by how long ago they were created."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from ottrecon.console import paging
from ottrecon.console.errors import BadFilter
from ottrecon.console.filters import choice, text
from ottrecon.console.render import render
from ottrecon.console.web import pool
from ottrecon.db import translate_errors

# Orders that may still be paid: not final, no money yet (order_status_rank below 'declined').
WAITING = ("pending", "awaiting_payment", "unpaid", "review")
# Buckets by created_at: (key, label, clause). Boundaries belong to the older bucket (15 min is 15-60 min).
BUCKETS = (
    ("lt15m", "< 15 min", "o.created_at > now() - interval '15 minutes'"),
    (
        "15m-1h",
        "15-60 min",
        "o.created_at <= now() - interval '15 minutes' AND o.created_at > now() - interval '1 hour'",
    ),
    ("1h-24h", "1-24 h", "o.created_at <= now() - interval '1 hour' AND o.created_at > now() - interval '24 hours'"),
    ("gt24h", "> 24 h", "o.created_at <= now() - interval '24 hours'"),
)
_CASE = " ".join(f"WHEN {clause} THEN '{key}'" for key, _, clause in BUCKETS)
# Count and money expected per bucket (orders_status_idx: status, created_at).
SUMMARY = f"""
SELECT CASE {_CASE} END AS bucket, count(*) AS n, coalesce(sum(o.amount + o.tip), 0)::int8 AS expected
FROM orders o WHERE o.status = ANY ($1::text[])
GROUP BY 1
"""
# Oldest first by keyset on (created_at, id); the bucket and merchant clauses are fixed text.
LIST = """
SELECT o.id, o.merchant_id, o.order_id, o.kind, o.biz_type, o.amount, o.tip, o.status, o.status_reason,
       o.created_at, o.unpaid_flagged_at, o.check_attempts, now() - o.created_at AS age
FROM orders o
WHERE o.status = ANY ($1::text[]) {filters}
ORDER BY o.created_at, o.id
LIMIT {limit}
"""


async def show(request: web.Request) -> web.Response:
    """GET /console/unpaid?bucket=&merchant_id=&after="""
    problems: list[str] = []
    bucket = choice(request.query, "bucket", tuple(key for key, _, _ in BUCKETS), problems)
    merchant_id = text(request.query, "merchant_id", problems)
    if problems:
        raise BadFilter(problems)
    after = paging.decode(request.query.get("after"), (datetime, int))
    args: list[Any] = [list(WAITING)]
    clauses = [clause for key, _, clause in BUCKETS if key == bucket]
    if merchant_id is not None:
        args.append(merchant_id)
        clauses.append(f"o.merchant_id = ${len(args)}")
    if after is not None:
        args.extend(after)
        clauses.append(f"(o.created_at, o.id) > (${len(args) - 1}, ${len(args)})")
    sql = LIST.format(filters="".join(f" AND {c}" for c in clauses), limit=paging.PAGE_SIZE + 1)
    async with translate_errors(), pool(request).acquire() as conn:
        summary = {r["bucket"]: dict(r) for r in await conn.fetch(SUMMARY, list(WAITING))}
        rows = [dict(r) for r in await conn.fetch(sql, *args)]
    more = len(rows) > paging.PAGE_SIZE
    rows = rows[: paging.PAGE_SIZE]
    next_cursor = paging.encode((rows[-1]["created_at"], rows[-1]["id"])) if more else None
    buckets = [{"key": key, "label": label, **summary.get(key, {"n": 0, "expected": 0})} for key, label, _ in BUCKETS]
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
