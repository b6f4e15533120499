"""Fixtures for the console tests: the real api app (console mounted) on a fresh database, signed-in clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ottrecon import db as worker_db
from ottrecon.api.app import create_app
from ottrecon.api.settings import ApiSettings, parse_tokens
from tests.conftest import MERCHANT
from tests.console.support import console_settings

API_TOKEN = "console-test-token-0123456789abcdef"


def api_settings(database_url: str, redis_url: str, **console: Any) -> ApiSettings:
    return ApiSettings(
        database_url=database_url,
        redis_url=redis_url,
        token_digests=parse_tokens(API_TOKEN),
        merchant_ids=frozenset({MERCHANT}),
        console=console_settings(**console),
    )


@pytest.fixture
async def client(database_url: str, redis_url: str) -> AsyncIterator[TestClient[Any, Any]]:
    """An HTTP client for the api process with the console configured (plain-http cookies)."""
    async with TestClient(TestServer(create_app(api_settings(database_url, redis_url)))) as test_client:
        yield test_client


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's database for building evidence with the worker's own code."""
    created = await worker_db.create_pool(database_url, 2)
    yield created
    await created.close()
