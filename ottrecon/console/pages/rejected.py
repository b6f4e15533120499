"""Rejected callbacks: why each was refused, and a replay button once a worker holds the merchant's keys.

The api holds no sign keys: a replay is a job for a worker (REPLAY_REJECTED_JOB), which verifies the
callback again and records the outcome in rejected_callback_events with the requesting user.
"""

from __future__ import annotations

from aiohttp import web
from redis.exceptions import RedisError

from ottrecon.callbacks import store
from ottrecon.console import paging
from ottrecon.console.auth import require_finance
from ottrecon.console.csrf import checked_form
from ottrecon.console.errors import BadFilter, PageError
from ottrecon.console.filters import choice, positive_int
from ottrecon.console.render import render
from ottrecon.console.web import pool, redirect, redis, session, url
from ottrecon.db import translate_errors
from ottrecon.queue import QUEUE_NAME, REPLAY_REJECTED_JOB

TABS = ("open", "resolved")
_NO_BIGGER_ID = 2**63 - 1


async def show(request: web.Request) -> web.Response:
    """GET /console/rejected?tab=open|resolved&after=ID"""
    problems: list[str] = []
    tab = choice(request.query, "tab", TABS, problems) or "open"
    if problems:
        raise BadFilter(problems)
    after = request.query.get("after")
    before_id = positive_int(after, "the page link") if after else _NO_BIGGER_ID
    async with translate_errors(), pool(request).acquire() as conn:
        rows = [dict(r) for r in await conn.fetch(store.LIST_REJECTED, tab == "open", before_id, paging.PAGE_SIZE + 1)]
    more = len(rows) > paging.PAGE_SIZE
    rows = rows[: paging.PAGE_SIZE]
    return render(
        request,
        "rejected.html",
        active="rejected",
        rows=rows,
        tab=tab,
        tabs=TABS,
        next_after=rows[-1]["id"] if more else None,
        is_first_page=not after,
    )


async def detail(request: web.Request) -> web.Response:
    """GET /console/rejected/{rejected_id}: one rejection, its replay button and its history."""
    rejected_id = positive_int(request.match_info["rejected_id"], "the rejected callback id")
    async with translate_errors(), pool(request).acquire() as conn:
        row = await conn.fetchrow(store.ONE_REJECTED, rejected_id)
        events = await conn.fetch(store.REJECTED_EVENTS, rejected_id)
    if row is None:
        raise PageError(404, "No such rejected callback", "Go back to the list of rejected callbacks.")
    return render(request, "rejected_one.html", active="rejected", r=dict(row), events=events)


async def replay(request: web.Request) -> web.Response:
    """POST /console/rejected/{rejected_id}/replay: record who asked, then queue the job for a worker."""
    await checked_form(request)
    require_finance(request)
    rejected_id = positive_int(request.match_info["rejected_id"], "the rejected callback id")
    actor = session(request).user.name
    async with translate_errors(), pool(request).acquire() as conn, conn.transaction():
        await conn.fetchval(store.LOCK_REJECTED, rejected_id)
        row = await conn.fetchrow(store.ONE_REJECTED, rejected_id)
        if row is None:
            raise PageError(404, "No such rejected callback", "Go back to the list of rejected callbacks.")
        if row["resolved_at"] is not None:
            raise PageError(409, "Already recorded", "This callback was recorded by an earlier replay: nothing to do.")
        if not row["replayable"]:
            raise PageError(
                409,
                "No worker holds this merchant's keys",
                f"No worker has reported keys for merchant {row['merchant_id']} in the last hour, so a replay would "
                "fail again. Add the merchant to OTTPAY_MERCHANTS, restart the workers, then try again.",
            )
        event_id = await conn.fetchval(store.RECORD_REPLAY_REQUEST, rejected_id, actor)
        # Enqueued inside the transaction: if Redis refuses, the request event is rolled back too.
        job_id = f"{REPLAY_REJECTED_JOB}:{rejected_id}:{event_id}"
        try:
            await redis(request).enqueue_job(
                REPLAY_REJECTED_JOB, rejected_id, actor, _queue_name=QUEUE_NAME, _job_id=job_id
            )
        except (RedisError, OSError, TimeoutError) as exc:
            raise PageError(
                503, "The job queue is not answering", "Nothing was requested. Wait a minute and try again."
            ) from exc
    return redirect(url(f"/rejected/{rejected_id}?done=replay_requested"))
