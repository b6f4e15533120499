"""Rejected callbacks: reasons and times, a replay button only when a worker holds the keys, audited replays."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer
from arq import ArqRedis

import ottrecon.queue as api_side
import ottrecon.queue as worker_side
from ottpay.keys import MerchantKeys, parse_merchant_keys
from ottrecon.api.app import create_app
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.verdicts import RejectedCallback
from ottrecon.callbacks.verify import judge
from tests.conftest import MERCHANT, OLD_KEY, OTHER_KEY
from tests.console.conftest import api_settings
from tests.console.support import next_link, sign_in
from tests.integration.support import drain, make_callback, worker_settings

STRANGER = "NB00000001"


async def reject_stranger(pool: asyncpg.Pool, merchants: MerchantKeys, order_id: str = "ORDER12") -> int:
    """A real callback from a merchant the workers do not know yet: rejected as unknown_merchant."""
    verdict = judge(make_callback(order_id, "1500", merchant_id=STRANGER, key=OTHER_KEY), datetime.now(UTC), merchants)
    assert isinstance(verdict, RejectedCallback)
    await callback_store.record(pool, [], [verdict])
    async with pool.acquire() as conn:
        rejected_id: int = await conn.fetchval("SELECT id FROM rejected_callbacks WHERE md5 = $1", verdict.md5)
    return rejected_id


async def report_keys(db: asyncpg.Connection, merchant_id: str, age: timedelta = timedelta(seconds=5)) -> None:
    """What a worker holding the merchant's keys reports (worker/replay.py's REPORT_MERCHANTS)."""
    await db.execute(
        "INSERT INTO configured_merchants (merchant_id, key_count, reported_at) VALUES ($1, 1, now() - $2::interval)",
        merchant_id,
        age,
    )


def test_replay_job_name_and_queue_match_the_workers() -> None:
    assert api_side.REPLAY_REJECTED_JOB == worker_side.REPLAY_REJECTED_JOB
    assert api_side.QUEUE_NAME == worker_side.QUEUE_NAME


async def test_rejected_list_shows_reason_times_and_claimed_merchant(
    client: TestClient[Any, Any], pool: asyncpg.Pool, merchants: MerchantKeys
) -> None:
    rejected_id = await reject_stranger(pool, merchants)
    await sign_in(client, "victor")

    html = await (await client.get("/console/rejected")).text()
    one = await (await client.get(f"/console/rejected/{rejected_id}")).text()
    resolved_tab = await (await client.get("/console/rejected?tab=resolved")).text()

    assert f'data-rejected-id="{rejected_id}" data-replayable="no"' in html
    assert STRANGER in html and "unknown merchant" in html
    assert 'data-test="rejected-reason">unknown_merchant<' in one
    assert 'data-test="empty-rejected"' in resolved_tab


async def test_replay_button_shows_only_for_merchants_a_worker_reported_within_the_hour(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys
) -> None:
    fresh = await reject_stranger(pool, merchants, "ORDER1")
    await report_keys(db, STRANGER)
    stale_merchant = "NB00000002"
    verdict = judge(
        make_callback("ORDER2", "100", merchant_id=stale_merchant, key=OTHER_KEY), datetime.now(UTC), merchants
    )
    assert isinstance(verdict, RejectedCallback)
    await callback_store.record(pool, [], [verdict])
    await report_keys(db, stale_merchant, timedelta(hours=2))
    await sign_in(client, "fiona")

    html = await (await client.get("/console/rejected")).text()

    assert f'data-rejected-id="{fresh}" data-replayable="yes"' in html
    assert html.count('data-test="replay-button"') == 1
    assert html.count('data-replayable="no"') == 1


async def test_replay_records_the_request_enqueues_the_job_and_the_worker_audits_it(
    client: TestClient[Any, Any],
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    merchants: MerchantKeys,
    redis: ArqRedis,
    database_url: str,
    redis_url: str,
) -> None:
    rejected_id = await reject_stranger(pool, merchants)
    await report_keys(db, STRANGER)
    token = await sign_in(client, "fiona")

    response = await client.post(f"/console/rejected/{rejected_id}/replay", data={"csrf_token": token})
    html = await response.text()
    jobs = [worker_side.deserialize(await redis.get(key)) for key in await redis.keys("arq:job:*")]

    assert response.status == 200 and response.url.path == f"/console/rejected/{rejected_id}"
    assert 'data-action="replay_requested" data-actor="fiona"' in html
    assert [(job["f"], job["a"]) for job in jobs] == [(worker_side.REPLAY_REJECTED_JOB, [rejected_id, "fiona"])]

    # A worker that now holds the stranger's key runs the job and records the outcome with the same actor.
    keys = parse_merchant_keys(f"{MERCHANT}={OLD_KEY},{STRANGER}={OTHER_KEY}")
    await drain(worker_settings(database_url, redis_url, keys))
    events = await db.fetch(
        "SELECT action, actor FROM rejected_callback_events WHERE rejected_id = $1 ORDER BY id", rejected_id
    )
    page = await (await client.get(f"/console/rejected/{rejected_id}")).text()

    assert [(e["action"], e["actor"]) for e in events] == [("replay_requested", "fiona"), ("recorded", "fiona")]
    assert await db.fetchval("SELECT amount FROM payments WHERE merchant_id = $1", STRANGER) == 1500
    assert "recorded (recorded)" in page and 'data-test="replay-button"' not in page


async def test_replay_of_a_merchant_no_worker_holds_is_refused(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, redis: ArqRedis
) -> None:
    rejected_id = await reject_stranger(pool, merchants)
    token = await sign_in(client, "fiona")

    response = await client.post(f"/console/rejected/{rejected_id}/replay", data={"csrf_token": token})
    missing = await client.post("/console/rejected/424242/replay", data={"csrf_token": token})

    assert (response.status, missing.status) == (409, 404)
    assert "No worker holds this merchant" in await response.text()
    assert await db.fetchval("SELECT count(*) FROM rejected_callback_events") == 0
    assert await redis.keys("arq:job:*") == []


async def test_replay_while_redis_is_down_records_nothing(
    database_url: str, db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys
) -> None:
    rejected_id = await reject_stranger(pool, merchants)
    await report_keys(db, STRANGER)
    # Nothing listens on port 1: every Redis command fails at once.
    settings = api_settings(database_url, "redis://127.0.0.1:1/0")
    async with TestClient(TestServer(create_app(settings))) as client:
        token = await sign_in(client, "fiona")
        response = await client.post(f"/console/rejected/{rejected_id}/replay", data={"csrf_token": token})
        html = await response.text()

    assert response.status == 503
    assert "The job queue is not answering" in html
    assert await db.fetchval("SELECT count(*) FROM rejected_callback_events") == 0


async def test_rejected_pages_return_every_rejection_exactly_once(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO rejected_callbacks (merchant_id, md5, envelope, envelope_sha256, reason, detail, received_at, "
        "last_received_at) SELECT 'NB0000000' || (i % 3), 'MD5' || i, '{}', 'sha' || i, 'digest_mismatch', "
        "'the md5 does not match', now(), now() FROM generate_series(1, 57) i"
    )
    await sign_in(client, "victor")
    seen: list[str] = []
    link: str | None = "/console/rejected"
    while link:
        html = await (await client.get(link)).text()
        seen += re.findall(r'data-rejected-id="(\d+)"', html)
        link = next_link(html)

    assert [int(i) for i in seen] == list(range(57, 0, -1))
