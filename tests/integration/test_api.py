"""The payments API's contract: tokens, validation, idempotency keys, listing."""

from __future__ import annotations

import asyncpg

from tests.integration.stack import API_TOKEN, running_stack


async def test_api_refuses_requests_without_a_valid_token(database_url: str, redis_url: str) -> None:
    async with running_stack(database_url, redis_url) as stack:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef"}, {"Authorization": API_TOKEN}):
            response = await stack.api.get("/api/payments", headers=headers)
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
        spec = await stack.api.get("/api/openapi.json")
        assert spec.status == 200
        assert {"/api/payments", "/api/payments/{payment_id}/refunds"} <= set((await spec.json())["paths"])
        assert (await stack.api.get("/healthz")).status == 200


async def test_same_idempotency_key_returns_the_same_payment_and_submits_once(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    async with running_stack(database_url, redis_url) as stack:
        first_status, first = await stack.pay("k-same", kind="ACTIVEPAY", amount=1500)
        second_status, second = await stack.pay("k-same", kind="ACTIVEPAY", amount=1500)
        conflict_status, conflict = await stack.pay("k-same", kind="ACTIVEPAY", amount=1600)
        orders = await (await stack.sim.get("/sim/orders")).json()

    assert (first_status, second_status, conflict_status) == (201, 200, 409)
    assert first["id"] == second["id"]
    assert conflict["error"] == "idempotency_conflict"
    assert await db.fetchval("SELECT count(*) FROM orders") == 1
    assert await db.fetchval("SELECT count(*) FROM submission_attempts WHERE action = 'ACTIVEPAY'") == 1
    assert len(orders["orders"]) == 1


async def test_invalid_payment_requests_name_every_problem(database_url: str, redis_url: str) -> None:
    async with running_stack(database_url, redis_url) as stack:
        status, body = await stack.pay("k-bad", kind="PASSIVEPAY", amount=12.5, biz_type="PAYPAL", tip="1")
        assert status == 422
        problems = " ".join(body["problems"])
        for word in ("amount", "tip", "biz_type", "auth_code"):
            assert word in problems
        missing_key = await stack.api.post("/api/payments", json={}, headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert missing_key.status == 422
        assert "Idempotency-Key" in " ".join((await missing_key.json())["problems"])
        unknown_merchant, body = await stack.pay("k-bad-2", kind="ACTIVEPAY", merchant_id="NOPE000000")
        assert unknown_merchant == 422


async def test_list_payments_filters_by_status_and_pages(database_url: str, redis_url: str) -> None:
    async with running_stack(database_url, redis_url) as stack:
        ids = [(await stack.pay(f"k-list-{n}", kind="ACTIVEPAY", amount=100 + n))[1]["id"] for n in range(3)]
        _, declined = await stack.pay("k-list-d", kind="PASSIVEPAY", auth_code="283456789012340000")
        page1 = await stack.get("/api/payments?status=awaiting_payment&limit=2")
        page2 = await stack.get(f"/api/payments?status=awaiting_payment&limit=2&after={page1['next']}")
        only_declined = await stack.get("/api/payments?status=declined")
        missing = await stack.api.get("/api/payments/NOSUCHID", headers={"Authorization": f"Bearer {API_TOKEN}"})

    assert [p["id"] for p in page1["payments"] + page2["payments"]] == ids[::-1]
    assert page2["next"] is None
    assert [p["id"] for p in only_declined["payments"]] == [declined["id"]]
    assert missing.status == 404
