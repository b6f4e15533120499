"""The payments API under hostile input: every error is JSON in the documented shape, with a 4xx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ottrecon.api.app import create_app
from ottrecon.api.settings import ApiSettings, parse_tokens
from tests.conftest import MERCHANT

TOKEN = "hostile-api-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def api(database_url: str, redis_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    settings = ApiSettings(
        database_url=database_url,
        redis_url=redis_url,
        token_digests=parse_tokens(TOKEN),
        merchant_ids=frozenset({MERCHANT}),
        wait_s=0.2,
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


async def _error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json", await response.text()
    body: dict[str, Any] = await response.json()
    assert set(body) == {"error", "problems"}
    assert isinstance(body["error"], str) and all(isinstance(p, str) for p in body["problems"])
    return body


async def test_body_over_the_limit_is_a_json_413(api: TestClient[Any, Any]) -> None:
    headers = AUTH | {"Idempotency-Key": "big-1"}
    response = await api.post("/api/payments", data=b'{"a":"' + b"x" * 70_000 + b'"}', headers=headers)
    assert (await _error_of(response, 413))["error"] == "body_too_large"


@pytest.mark.parametrize("path", ["/api/payments/A%00B", "/api/payments/A%00B/qr.svg", "/api/payments/%00"])
async def test_nul_byte_in_a_payment_id_is_a_json_404(api: TestClient[Any, Any], path: str) -> None:
    response = await api.get(path, headers=AUTH)
    assert (await _error_of(response, 404))["error"] == "not_found"


async def test_nul_byte_in_a_refunded_payment_id_is_a_json_404(api: TestClient[Any, Any]) -> None:
    headers = AUTH | {"Idempotency-Key": "nul-refund"}
    response = await api.post("/api/payments/A%00B/refunds", json={"amount": 100}, headers=headers)
    assert (await _error_of(response, 404))["error"] == "not_found"


@pytest.mark.parametrize(
    "query",
    [
        "after=99999999999999999999999",
        "after=9223372036854775808",
        "after=-1",
        "limit=%C2%B2",
        "after=%D9%A3",
        "limit=1%00",
        "status=paid%00",
        "limit=0",
    ],
)
async def test_bad_list_queries_are_a_json_422(api: TestClient[Any, Any], query: str) -> None:
    response = await api.get(f"/api/payments?{query}", headers=AUTH)
    assert (await _error_of(response, 422))["error"] == "invalid_request"


async def test_largest_cursor_is_accepted(api: TestClient[Any, Any]) -> None:
    response = await api.get("/api/payments?after=9223372036854775807&limit=200", headers=AUTH)
    assert response.status == 200, await response.text()
    assert await response.json() == {"payments": [], "next": None}


@pytest.mark.parametrize(
    "body",
    [b"[" * 50_000 + b"]" * 10_000, b'{"a":' * 12_000, b'{"amount":NaN}', b'{"amount":1e999}', b'"\\ud800"'],
    ids=["deep", "deep-object", "nan", "overflow", "surrogate"],
)
async def test_hostile_json_bodies_are_a_json_422(api: TestClient[Any, Any], body: bytes) -> None:
    for path in ("/api/payments", "/api/payments/A0000000000000000000/refunds"):
        response = await api.post(path, data=body, headers=AUTH | {"Idempotency-Key": "deep-1"})
        assert (await _error_of(response, 422))["error"] == "invalid_request"


async def test_unknown_routes_and_methods_answer_json(api: TestClient[Any, Any]) -> None:
    assert (await _error_of(await api.get("/api/nothing-here", headers=AUTH), 404))["error"] == "not_found"
    response = await api.delete("/api/payments", headers=AUTH)
    assert (await _error_of(response, 405))["error"] == "method_not_allowed"


@pytest.mark.parametrize("merchant_id", [{}, [], {"a": 1}])
async def test_unhashable_merchant_id_is_a_json_422(api: TestClient[Any, Any], merchant_id: object) -> None:
    body = {"merchant_id": merchant_id, "kind": "ACTIVEPAY", "biz_type": "ALIPAY", "amount": 100}
    response = await api.post("/api/payments", json=body, headers=AUTH | {"Idempotency-Key": "unhashable"})
    assert (await _error_of(response, 422))["error"] == "invalid_request"


async def test_authorization_header_that_is_not_utf8_is_a_json_401(api: TestClient[Any, Any]) -> None:
    # Raw bytes on the wire: HTTP clients would encode a str header as UTF-8 first.
    reader, writer = await asyncio.open_connection(api.host, api.port)
    writer.write(
        b"GET /api/payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), answer[:300]
    assert json.loads(body)["error"] == "unauthorized"


@pytest.mark.parametrize("path", ["/api/payments?limt=5", "/api/payments/A0000000000000000000?x=1"])
async def test_query_parameters_a_route_does_not_take_are_a_json_422(api: TestClient[Any, Any], path: str) -> None:
    response = await api.get(path, headers=AUTH)
    assert (await _error_of(response, 422))["error"] == "invalid_request"
