"""Error pages in the console's look: what happened and what to do, never a stack trace; security headers."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from ottrecon.api.app import create_app
from tests.console.conftest import api_settings
from tests.console.support import sign_in


def no_internals(html: str) -> None:
    for leak in ("Traceback", "asyncpg", 'File "', "UndefinedTable"):
        assert leak not in html


async def test_unknown_console_page_is_a_404_page(client: TestClient[Any, Any]) -> None:
    await sign_in(client, "victor")

    response = await client.get("/console/no-such-page")
    html = await response.text()

    assert response.status == 404
    assert 'data-test="error-page" data-status="404"' in html and "Page not found" in html
    assert 'id="nav"' in html  # the console's own look, with its menu


async def test_wrong_method_is_a_405_page(client: TestClient[Any, Any]) -> None:
    await sign_in(client, "victor")

    response = await client.get("/console/logout")

    assert response.status == 405
    assert "Not possible here" in await response.text()


async def test_unexpected_failure_is_a_500_page_without_internals(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await sign_in(client, "victor")
    await db.execute("DROP TABLE configured_merchants CASCADE")

    response = await client.get("/console/rejected")
    html = await response.text()

    assert response.status == 500
    assert "Something went wrong on our side" in html and "tell on-call the time" in html
    no_internals(html)


async def test_database_down_is_a_503_page(redis_url: str) -> None:
    settings = api_settings("postgresql://postgres@127.0.0.1:1/none", redis_url)
    async with TestClient(TestServer(create_app(settings))) as client:
        client.session.cookie_jar.update_cookies({"ottrecon_console": "some-session"}, client.make_url("/console/"))
        response = await client.get("/console/ledger")
        html = await response.text()

    assert response.status == 503
    assert "The database is not answering" in html
    no_internals(html)


async def test_console_answers_carry_security_headers_and_are_never_cached(client: TestClient[Any, Any]) -> None:
    await sign_in(client, "victor")

    for path in ("/console/", "/console/login", "/console/ledger.csv", "/console/no-such-page"):
        response = await client.get(path)
        await response.read()
        assert "default-src 'none'" in response.headers["Content-Security-Policy"], path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["Cache-Control"] == "no-store", path
