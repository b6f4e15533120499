"""Every POST checks its CSRF token; viewers read everything and change nothing (and see no buttons)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from arq import ArqRedis

from ottpay.keys import MerchantKeys
from ottrecon.api.app import create_app
from tests.conftest import MERCHANT
from tests.console.conftest import api_settings
from tests.console.support import sign_in
from tests.console.test_alerts import amount_mismatch
from tests.console.test_rejected import STRANGER, reject_stranger, report_keys


async def evidence(db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, tmp: Path) -> tuple[int, int]:
    """An open alert, and an open rejection a worker could replay."""
    alert_id = await amount_mismatch(db, pool, merchants, tmp)
    rejected_id = await reject_stranger(pool, merchants)
    await report_keys(db, STRANGER)
    return alert_id, rejected_id


def posts(alert_id: int, rejected_id: int) -> list[str]:
    return [
        f"/console/alerts/{alert_id}/acknowledge",
        f"/console/alerts/{alert_id}/resolve",
        f"/console/rejected/{rejected_id}/replay",
        "/console/closes",
        "/console/closes/reopen",
        "/console/logout",
    ]


def statement_form(token: str | None) -> FormData:
    form = FormData()
    if token is not None:
        form.add_field("csrf_token", token)
    form.add_field("file", b"merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n", filename="s.csv")
    return form


async def nothing_changed(db: asyncpg.Connection, redis: ArqRedis, alert_id: int) -> None:
    assert await db.fetchval("SELECT status FROM alerts WHERE id = $1", alert_id) == "open"
    assert await db.fetchval("SELECT count(*) FROM alert_events WHERE actor <> 'reconciler'") == 0
    assert await db.fetchval("SELECT count(*) FROM rejected_callback_events") == 0
    assert await db.fetchval("SELECT count(*) FROM book_closes") == 0
    assert await db.fetchval("SELECT count(*) FROM statement_imports WHERE file_name = 's.csv'") == 0
    assert await db.fetchval("SELECT count(*) FROM console_sessions") == 1
    assert await redis.keys("arq:job:*") == []


async def test_every_post_without_a_csrf_token_is_forbidden(
    client: TestClient[Any, Any],
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    merchants: MerchantKeys,
    redis: ArqRedis,
    tmp_path: Path,
) -> None:
    alert_id, rejected_id = await evidence(db, pool, merchants, tmp_path)
    await sign_in(client, "fiona")

    for path in posts(alert_id, rejected_id):
        response = await client.post(path, data={"note": "sure"})
        assert response.status == 403, path
        assert "This form has expired" in await response.text()
    upload = await client.post("/console/statements", data=statement_form(None))

    assert upload.status == 403
    await nothing_changed(db, redis, alert_id)


async def test_every_post_with_a_wrong_csrf_token_is_forbidden(
    client: TestClient[Any, Any],
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    merchants: MerchantKeys,
    redis: ArqRedis,
    tmp_path: Path,
    database_url: str,
    redis_url: str,
) -> None:
    alert_id, rejected_id = await evidence(db, pool, merchants, tmp_path)
    # Another signed-in session's token is as wrong as a made-up one.
    async with TestClient(TestServer(create_app(api_settings(database_url, redis_url)))) as other:
        other_token = await sign_in(other, "fiona")
    await sign_in(client, "fiona")

    for token in ("made-up", other_token):
        for path in posts(alert_id, rejected_id):
            response = await client.post(path, data={"csrf_token": token, "note": "sure"})
            assert response.status == 403, path
        assert (await client.post("/console/statements", data=statement_form(token))).status == 403
    await db.execute("DELETE FROM console_sessions WHERE username = 'fiona' AND csrf_token = $1", other_token)
    await nothing_changed(db, redis, alert_id)


async def test_viewer_cannot_acknowledge_resolve_replay_or_import(
    client: TestClient[Any, Any],
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    merchants: MerchantKeys,
    redis: ArqRedis,
    tmp_path: Path,
) -> None:
    alert_id, rejected_id = await evidence(db, pool, merchants, tmp_path)
    token = await sign_in(client, "victor")

    for path in posts(alert_id, rejected_id)[:-1]:  # all but logout
        response = await client.post(
            path, data={"csrf_token": token, "note": "sure", "reason": "sure", "date": "2024-05-01"}
        )
        assert response.status == 403, path
        assert "viewer role" in await response.text()
    upload = await client.post("/console/statements", data=statement_form(token))

    assert upload.status == 403
    await nothing_changed(db, redis, alert_id)


async def test_viewer_sees_no_action_buttons(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, tmp_path: Path
) -> None:
    _, rejected_id = await evidence(db, pool, merchants, tmp_path)
    await sign_in(client, "victor")

    order = await (await client.get(f"/console/order?merchant_id={MERCHANT}&order_id=ORDERAM1")).text()
    rejected = await (await client.get("/console/rejected")).text()
    one = await (await client.get(f"/console/rejected/{rejected_id}")).text()
    statements = await (await client.get("/console/statements")).text()
    closes = await (await client.get("/console/closes")).text()

    assert 'data-test="ack-form"' not in order and 'data-test="resolve-form"' not in order
    assert 'data-test="replay-button"' not in rejected + one
    assert 'id="statement-form"' not in statements
    assert 'data-test="close-form"' not in closes
    assert 'data-test="current-role">viewer<' in order


async def test_finance_user_sees_the_action_buttons(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, tmp_path: Path
) -> None:
    _, rejected_id = await evidence(db, pool, merchants, tmp_path)
    await sign_in(client, "fiona")

    order = await (await client.get(f"/console/order?merchant_id={MERCHANT}&order_id=ORDERAM1")).text()
    one = await (await client.get(f"/console/rejected/{rejected_id}")).text()
    statements = await (await client.get("/console/statements")).text()
    closes = await (await client.get("/console/closes")).text()

    assert 'data-test="ack-form"' in order and 'data-test="resolve-form"' in order
    assert 'data-test="replay-button"' in one
    assert 'id="statement-form"' in statements
    assert 'data-test="close-form"' in closes
