"""Mismatches and alerts: listed open first with their evidence; acknowledge and resolve are audited."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from ottpay.keys import MerchantKeys
from ottrecon.db import fetch_one
from ottrecon.reconciliation.layouts import StatementLayout
from ottrecon.reconciliation.statements import import_statement
from tests.conftest import MERCHANT
from tests.console.support import create_order, csrf_of, deliver, next_link, reconcile, sign_in, today


async def amount_mismatch(db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, tmp: Path) -> int:
    """Order ORDERAM1 for 10.00, paid 9.00 by an authentic callback, with a gateway attempt and a statement line."""
    order_ref = await create_order(db, "ORDERAM1", 1000)
    await db.execute(
        "INSERT INTO submission_attempts (order_ref, action, outcome, rsp_code, sent, started_at, latency_ms) "
        "VALUES ($1, 'ACTIVEPAY', 'success', 'SUCCESS', true, now(), 42)",
        order_ref,
    )
    await deliver(pool, merchants, "ORDERAM1", 900, today())
    statement = tmp / "day.csv"
    day = today().isoformat()
    statement.write_text(
        "merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n"
        f"{MERCHANT},ORDERAM1,ALORDERAM1,900,0,18,0,{day} 12:00:00\n"
    )
    await import_statement(pool, statement, StatementLayout())
    await reconcile(pool)
    alert_id: int = await db.fetchval("SELECT id FROM alerts WHERE order_id = 'ORDERAM1' AND kind = 'amount_mismatch'")
    return alert_id


async def test_alerts_list_shows_open_alerts_first_with_counts(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, tmp_path: Path
) -> None:
    alert_id = await amount_mismatch(db, pool, merchants, tmp_path)
    await sign_in(client, "victor")

    default = await (await client.get("/console/alerts")).text()
    acknowledged = await (await client.get("/console/alerts?status=acknowledged")).text()

    assert f'data-alert-id="{alert_id}" data-status="open"' in default
    assert 'data-test="count-open">1<' in default
    assert 'data-cents="100"' in default  # 1.00 at risk
    assert 'data-test="empty-alerts"' in acknowledged


async def test_order_evidence_shows_every_source_for_the_alert(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, tmp_path: Path
) -> None:
    alert_id = await amount_mismatch(db, pool, merchants, tmp_path)
    await sign_in(client, "victor")

    response = await client.get(f"/console/order?merchant_id={MERCHANT}&order_id=ORDERAM1")
    html = await response.text()

    assert response.status == 200
    assert f'id="alert-{alert_id}"' in html
    assert html.count('data-test="callback-row"') == 1
    assert html.count('data-test="attempt-row"') == 1
    assert html.count('data-test="statement-line-row"') == 1
    assert 'data-action="opened" data-actor="reconciler"' in html
    assert "10.00 CAD" in html and "9.00 CAD" in html
    assert 'data-test="ack-form"' not in html  # a viewer gets no buttons


async def test_acknowledge_records_the_user_and_note_and_shows_them(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, tmp_path: Path
) -> None:
    alert_id = await amount_mismatch(db, pool, merchants, tmp_path)
    token = await sign_in(client, "fiona")
    evidence = await (await client.get(f"/console/order?merchant_id={MERCHANT}&order_id=ORDERAM1")).text()
    assert 'data-test="ack-form"' in evidence and 'data-test="resolve-form"' in evidence

    response = await client.post(
        f"/console/alerts/{alert_id}/acknowledge", data={"csrf_token": token, "note": "calling the merchant"}
    )
    html = await response.text()
    event = await fetch_one(db, "SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY id DESC LIMIT 1", alert_id)

    assert response.status == 200 and response.url.path == "/console/order"
    assert (event["action"], event["actor"], event["note"]) == ("acknowledged", "fiona", "calling the merchant")
    assert await db.fetchval("SELECT status FROM alerts WHERE id = $1", alert_id) == "acknowledged"
    assert 'data-action="acknowledged" data-actor="fiona"' in html and "calling the merchant" in html
    assert 'data-test="notice"' in html


async def test_resolve_records_a_manual_resolution_with_the_user(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, tmp_path: Path
) -> None:
    alert_id = await amount_mismatch(db, pool, merchants, tmp_path)
    token = await sign_in(client, "fiona")

    response = await client.post(
        f"/console/alerts/{alert_id}/resolve", data={"csrf_token": token, "note": "customer paid the rest in cash"}
    )
    alert = await fetch_one(db, "SELECT status, resolution FROM alerts WHERE id = $1", alert_id)
    event = await fetch_one(db, "SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY id DESC LIMIT 1", alert_id)
    resolved_tab = await (await client.get("/console/alerts?status=resolved")).text()

    assert response.status == 200
    assert (alert["status"], alert["resolution"]) == ("resolved", "manual")
    assert (event["action"], event["actor"], event["note"]) == ("resolved", "fiona", "customer paid the rest in cash")
    assert "resolved by <strong>fiona</strong>" in resolved_tab


async def test_resolve_without_a_note_changes_nothing(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, tmp_path: Path
) -> None:
    alert_id = await amount_mismatch(db, pool, merchants, tmp_path)
    token = await sign_in(client, "fiona")

    for path in ("resolve", "acknowledge"):
        response = await client.post(f"/console/alerts/{alert_id}/{path}", data={"csrf_token": token, "note": "  "})
        assert response.status == 422
        assert "A note is required" in await response.text()
    assert await db.fetchval("SELECT status FROM alerts WHERE id = $1", alert_id) == "open"
    assert await db.fetchval("SELECT count(*) FROM alert_events WHERE actor = 'fiona'") == 0


async def test_acknowledging_an_alert_twice_is_a_conflict_page(
    client: TestClient[Any, Any], db: asyncpg.Connection, pool: asyncpg.Pool, merchants: MerchantKeys, tmp_path: Path
) -> None:
    alert_id = await amount_mismatch(db, pool, merchants, tmp_path)
    token = await sign_in(client, "fiona")
    data = {"csrf_token": token, "note": "looking"}

    first = await client.post(f"/console/alerts/{alert_id}/acknowledge", data=data)
    second = await client.post(f"/console/alerts/{alert_id}/acknowledge", data=data)
    missing = await client.post("/console/alerts/999999/acknowledge", data=data)
    not_a_number = await client.post("/console/alerts/abc/acknowledge", data=data)

    assert (first.status, second.status, missing.status, not_a_number.status) == (200, 409, 404, 400)
    assert "The alert changed meanwhile" in await second.text()
    assert await db.fetchval("SELECT count(*) FROM alert_events WHERE actor = 'fiona'") == 1


async def test_alerts_pages_return_every_alert_exactly_once(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO alerts (kind, merchant_id, order_id, amount_at_risk, first_seen_at) "
        "SELECT 'unpaid', $1, 'P' || i, i, '2024-05-01'::timestamptz + (i % 7) * interval '1 hour' "
        "FROM generate_series(1, 123) i",
        MERCHANT,
    )
    await sign_in(client, "victor")
    seen: list[str] = []
    link: str | None = "/console/alerts?status=open&kind=unpaid"
    pages = 0
    while link:
        html = await (await client.get(link)).text()
        seen += re.findall(r'data-alert-id="(\d+)"', html)
        link, pages = next_link(html), pages + 1

    assert pages == 3
    assert len(seen) == len(set(seen)) == 123


async def test_order_page_for_an_unknown_order_is_a_404_page(client: TestClient[Any, Any]) -> None:
    await sign_in(client, "victor")

    response = await client.get(f"/console/order?merchant_id={MERCHANT}&order_id=NOPE")
    missing_ids = await client.get("/console/order")

    assert response.status == 404
    assert "Nothing is known about this order" in await response.text()
    assert missing_ids.status == 400


async def test_evidence_page_escapes_ids_from_untrusted_callbacks(
    client: TestClient[Any, Any], pool: asyncpg.Pool, merchants: MerchantKeys
) -> None:
    await deliver(pool, merchants, "<script>x</script>", 500, today())
    await reconcile(pool)
    await sign_in(client, "victor")

    html = await (
        await client.get("/console/order", params={"merchant_id": MERCHANT, "order_id": "<script>x</script>"})
    ).text()
    ledger = await (await client.get("/console/ledger")).text()

    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert "<script>" not in ledger and "orphan payment" in ledger
    assert csrf_of(html)
