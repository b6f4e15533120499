"""The finance console under hostile input: open redirects and header injection, password guessing
(concurrent, behind a proxy), weak stored hashes, and downloads that would exhaust threads and connections."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ottrecon.api.app import create_app
from ottrecon.console.client_address import parse_trusted_proxies
from ottrecon.console.passwords import PasswordHash, hash_password
from ottrecon.console.settings import parse_users
from tests.console.conftest import api_settings
from tests.console.support import PASSWORDS, csrf_of, fill_ledger, sign_in

WEAK_N = 2**14


@pytest.fixture
async def weak_client(database_url: str, redis_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    """Users configured with hashes made before N was raised to 2**17 (the console's default now)."""
    users = parse_users(f"fiona:finance:{hash_password(PASSWORDS['fiona'], n=WEAK_N)}")
    settings = api_settings(database_url, redis_url, users=users, password_n=2**17)
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


async def _attempt(client: TestClient[Any, Any], name: str, password: str, **extra: Any) -> Any:
    form = await client.get("/console/login")
    token = csrf_of(await form.text())
    data = {"csrf_token": token, "username": name, "password": password, **extra.pop("data", {})}
    return await client.post("/console/login", data=data, allow_redirects=False, **extra)


@pytest.mark.parametrize(
    "target",
    ["/console/ledger\r\nSet-Cookie: evil=1", "/console/\nX: y", "/console/\x00", "/console/\x7f", "/console/é"],
    ids=["crlf", "lf", "nul", "del", "non-ascii"],
)
async def test_sign_in_with_a_control_character_in_next_lands_on_the_overview_with_one_session(
    client: TestClient[Any, Any], db: asyncpg.Connection, target: str
) -> None:
    response = await _attempt(client, "fiona", PASSWORDS["fiona"], data={"next": target})
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == "/console/"
    assert "evil" not in response.cookies
    assert await db.fetchval("SELECT count(*) FROM console_sessions") == 1
    assert (await client.get("/console/")).status == 200


async def test_concurrent_wrong_guesses_are_each_counted_before_the_password_check(
    client: TestClient[Any, Any],
) -> None:
    answers = await asyncio.gather(*(_attempt(client, "fiona", f"guess-{n}") for n in range(12)))
    statuses = sorted(a.status for a in answers)
    assert statuses.count(401) <= 5, statuses
    assert (await _attempt(client, "fiona", PASSWORDS["fiona"])).status == 429


async def test_forwarded_for_counts_each_client_behind_a_trusted_proxy(database_url: str, redis_url: str) -> None:
    settings = api_settings(database_url, redis_url, trusted_proxies=parse_trusted_proxies("127.0.0.1, ::1"))
    async with TestClient(TestServer(create_app(settings))) as client:
        for n in range(20):
            headers = {"X-Forwarded-For": "203.0.113.9, 10.9.9.9"}  # the proxy appends the real peer
            assert (await _attempt(client, f"nobody{n}", "x", headers=headers)).status == 401
        locked = await _attempt(client, "fiona", PASSWORDS["fiona"], headers={"X-Forwarded-For": "10.9.9.9"})
        other = await _attempt(client, "fiona", PASSWORDS["fiona"], headers={"X-Forwarded-For": "10.1.1.1"})
    assert locked.status == 429
    assert other.status == 303


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(client: TestClient[Any, Any]) -> None:
    for n in range(20):
        headers = {"X-Forwarded-For": f"10.0.0.{n}"}  # a guesser forging a new address each time
        assert (await _attempt(client, f"nobody{n}", "x", headers=headers)).status == 401
    forged = await _attempt(client, "fiona", PASSWORDS["fiona"], headers={"X-Forwarded-For": "10.7.7.7"})
    assert forged.status == 429


async def test_weak_configured_hash_is_upgraded_on_the_next_sign_in(
    weak_client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await sign_in(weak_client, "fiona")
    stored = await db.fetchval("SELECT password_hash FROM console_password_upgrades WHERE username = 'fiona'")
    upgraded = PasswordHash.parse(stored)
    assert upgraded.n == 2**17 and upgraded.matches(PASSWORDS["fiona"])
    # The upgraded hash is the one checked from now on; the password itself has not changed.
    await sign_in(weak_client, "fiona")
    assert (await _attempt(weak_client, "fiona", "not-her-password")).status == 401


async def test_upgraded_hash_is_ignored_once_the_configured_hash_changes(
    weak_client: TestClient[Any, Any], database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    await sign_in(weak_client, "fiona")
    assert await db.fetchval("SELECT count(*) FROM console_password_upgrades") == 1
    # An operator resets the password in configuration: the old password must stop working at once.
    users = parse_users(f"fiona:finance:{hash_password('a-brand-new-password', n=WEAK_N)}")
    settings = api_settings(database_url, redis_url, users=users, password_n=2**17)
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await _attempt(client, "fiona", PASSWORDS["fiona"])).status == 401
        assert (await _attempt(client, "fiona", "a-brand-new-password")).status == 303


def test_new_hashes_use_scrypt_n_of_at_least_2_17() -> None:
    assert PasswordHash.parse(hash_password("a-long-enough-password")).n >= 2**17


async def test_failed_sign_in_does_not_log_the_typed_user_name(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await _attempt(client, "my-password-typed-as-name", "x")
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "console sign-in failed" in logged
    assert "my-password-typed-as-name" not in logged


async def test_csv_downloads_beyond_the_limit_are_refused_not_queued_on_threads(
    database_url: str, redis_url: str, db: asyncpg.Connection
) -> None:
    # More CSV (about 15 MB) than the socket buffers and the pipe's queue take in: a stalled download's
    # export must wait, holding its slot. (20,000 rows fitted once the ledger export became COPY: the
    # exports finished into the buffers before the third request, and it was served.)
    rows = 100_000
    await fill_ledger(db, rows, __import__("datetime").date(2024, 5, 1), 2)
    settings = api_settings(database_url, redis_url, max_offloaded=2)
    count_connections = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    async with TestClient(TestServer(create_app(settings))) as client:
        await sign_in(client, "victor")
        baseline = await db.fetchval(count_connections)
        url = "/console/ledger.csv?from=2024-05-01&to=2024-05-02"
        held = [await client.get(url) for _ in range(2)]  # read a little, then stall: the exports wait
        for response in held:
            assert response.status == 200
            assert (await response.content.read(100)).startswith(b"merchant_id,")
        refused = await client.get(url)
        assert refused.status == 503, refused.status
        assert "downloads" in (await refused.text()).lower()
        assert await db.fetchval(count_connections) <= baseline + 2
        for response in held:
            response.close()
        for _ in range(100):
            again = await client.get(url)
            if again.status == 200:
                break
            again.close()
            await asyncio.sleep(0.1)
        assert again.status == 200
        assert (await again.read()).count(b"\n") == rows + 1


def _cursor(values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "path",
    [
        "/console/ledger?merchant_id=A%00B",
        "/console/ledger.csv?order_id=%00",
        "/console/order?merchant_id=M&order_id=O%00",
        "/console/unpaid?merchant_id=%00",
        "/console/alerts?merchant_id=%00",
        "/console/rejected/%C2%B2",
        "/console/statements/%D9%A3",
        "/console/rejected?after=%C2%B9",
        "/console/ledger?after=" + _cursor(["2024-05-01", "M\x00", "O"]),
        "/console/alerts?after=" + _cursor(["2024-05-01T00:00:00+00:00", 2**70]),
        "/console/ledger?after=" + base64.urlsafe_b64encode(b"[" * 5000).decode(),
    ],
    ids=[
        "nul-merchant",
        "nul-csv",
        "nul-order",
        "nul-unpaid",
        "nul-alerts",
        "sup-digit",
        "arabic-digit",
        "sup-after",
        "nul-cursor",
        "int-cursor",
        "deep-cursor",
    ],
)
async def test_hostile_filters_and_ids_are_a_400_page_not_a_fault(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture, path: str
) -> None:
    await sign_in(client, "victor")
    response = await client.get(path)
    assert response.status == 400, (response.status, (await response.text())[:300])
    assert "console page failed" not in caplog.text


async def test_alert_note_with_a_nul_is_refused_with_a_page(
    client: TestClient[Any, Any], db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    alert_id = await db.fetchval(
        "INSERT INTO alerts (kind, merchant_id, order_id, amount_at_risk, status) "
        "VALUES ('unpaid', 'M1', 'O1', 100, 'open') RETURNING id"
    )
    csrf = await sign_in(client, "fiona")
    response = await client.post(
        f"/console/alerts/{alert_id}/acknowledge", data={"csrf_token": csrf, "note": "seen\x00"}, allow_redirects=False
    )
    assert response.status == 422, (response.status, (await response.text())[:300])
    assert "console page failed" not in caplog.text


async def test_upload_with_control_characters_in_its_part_headers_is_a_400_page(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    csrf = await sign_in(client, "fiona")
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{csrf}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="\x1f"\r\n\r\nO1,100\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    response = await client.post(
        "/console/statements", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status == 400, (response.status, (await response.text())[:300])
    assert "console page failed" not in caplog.text
