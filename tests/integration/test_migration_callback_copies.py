"""The migration that keys callbacks on their whole body, on a database written by the code before it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

import asyncpg
import pytest

from ottpay.keys import MerchantKeys
from ottrecon.callbacks import store
from ottrecon.callbacks.verdicts import VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.migrations import SQL_PACKAGE, migrate
from tests.conftest import with_database
from tests.integration.support import make_callback

# Found by name, not number: the number may change when branches are merged.
MIGRATION_SUFFIX = "_callback_copies_by_body.sql"


@pytest.fixture
async def database_before(admin_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database migrated by the real runner with every migration before this one."""
    [this] = [p.name for p in files(SQL_PACKAGE).iterdir() if p.name.endswith(MIGRATION_SUFFIX)]
    name = f"ottrecon_mcc_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    old = tmp_path / "sql"
    old.mkdir()
    for path in files(SQL_PACKAGE).iterdir():
        if path.name.endswith(".sql") and path.name < this:
            (old / path.name).write_text(path.read_text())
    url = with_database(admin_url, name)
    await migrate(url, old)
    yield url
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def _verified(envelope: dict[str, str], merchants: MerchantKeys) -> VerifiedCallback:
    verdict = judge(envelope, datetime.now(UTC), merchants)
    assert isinstance(verdict, VerifiedCallback)
    return verdict


async def test_callbacks_recorded_before_are_still_found_duplicates_and_copies_join_them(
    database_before: str, merchants: MerchantKeys
) -> None:
    genuine = make_callback("OLD1")
    old = _verified(genuine, merchants)
    conn = await asyncpg.connect(database_before)
    try:
        # As the code before wrote it (the envelope as jsonb, spaced and ordered its own way).
        await conn.execute(
            "INSERT INTO callbacks (merchant_id, md5, order_id, rsp_code, envelope, data, signkey_index, received_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            old.merchant_id,
            old.md5,
            old.order_id,
            old.rsp_code,
            json.dumps(genuine, indent=2),
            json.dumps(old.data),
            old.signkey_index,
            old.received_at,
        )

        await migrate(database_before)

        pool = await asyncpg.create_pool(database_before, min_size=1, max_size=2)
        try:
            assert await store.record(pool, [_verified(genuine, merchants)], []) == set()
            copy = _verified({**genuine, "rsp_code": "FAIL"}, merchants)
            assert await store.record(pool, [copy], []) == {(copy.merchant_id, copy.md5)}
        finally:
            await pool.close()
        assert sorted(await conn.fetchval("SELECT array_agg(rsp_code) FROM callbacks")) == ["FAIL", "SUCCESS"]
    finally:
        await conn.close()
