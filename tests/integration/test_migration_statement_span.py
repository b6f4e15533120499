"""The migration that keys a statement import on its bytes, period and merchants, on imports stored before it."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import date
from importlib.resources import files
from pathlib import Path

import asyncpg
import pytest

from ottrecon.migrations import SQL_PACKAGE, migrate
from ottrecon.reconciliation.layouts import StatementLayout
from ottrecon.reconciliation.statements import import_statement, merchants_digest
from tests.conftest import with_database

# Found by name, not number: the number may change when branches are merged.
MIGRATION_SUFFIX = "_statement_import_is_bytes_for_a_span.sql"
HEADER = "merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n"


@pytest.fixture
async def old_sql(tmp_path: Path) -> Path:
    """Every migration before this one, as the runner reads them."""
    [this] = [p.name for p in files(SQL_PACKAGE).iterdir() if p.name.endswith(MIGRATION_SUFFIX)]
    old = tmp_path / "sql"
    old.mkdir()
    for path in files(SQL_PACKAGE).iterdir():
        if path.name.endswith(".sql") and path.name < this:
            (old / path.name).write_text(path.read_text())
    return old


@pytest.fixture
async def database(admin_url: str) -> AsyncIterator[str]:
    name = f"ottrecon_mss_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(admin_url, name)
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def test_imports_stored_before_keep_their_identity_after_the_migration(
    database: str, old_sql: Path, tmp_path: Path
) -> None:
    await migrate(database, old_sql)
    path = tmp_path / "may.csv"
    path.write_text(HEADER + "QC2,A2,AL2,100,0,1,0,2024-05-01 12:00:00\nQC1,A1,AL1,100,0,1,0,2024-05-01 13:00:00\n")
    conn = await asyncpg.connect(database)
    try:
        # As the code before this migration stored an import (the bytes alone as its key).
        await conn.execute(
            "INSERT INTO statement_imports (file_name, file_sha256, period_start, period_end, merchant_ids, line_count)"
            " VALUES ('may.csv', $1, '2024-05-01', '2024-05-01', $2, 2)",
            hashlib.sha256(path.read_bytes()).hexdigest(),
            ["QC1", "QC2"],
        )
        await migrate(database)
        stored = await conn.fetchval("SELECT merchants_sha256 FROM statement_imports")
    finally:
        await conn.close()

    # The digest the migration computed is the one the import computes: the same file is found already imported.
    assert stored == merchants_digest(["QC2", "QC1"])
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    try:
        again = await import_statement(pool, path, StatementLayout())
        quiet = await import_statement(
            pool, path, StatementLayout(), period=(date(2024, 5, 1), date(2024, 5, 2)), merchants=["QC1", "QC2"]
        )
    finally:
        await pool.close()
    assert (again.already_imported, quiet.already_imported) == (True, False)
