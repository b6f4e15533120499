"""The migration that keys a statement import on its bytes, period and merchants, on imports stored before it."""

from __future__ import annotations

import hashlib
from datetime import date
from importlib.resources import files
from pathlib import Path

import asyncpg
import pytest

from ottrecon.migrations import SQL_PACKAGE, migrate
from ottrecon.reconciliation.layouts import StatementLayout
from ottrecon.reconciliation.statements import import_statement

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


async def test_imports_stored_before_keep_their_identity_after_the_migration(
    empty_database: str, old_sql: Path, tmp_path: Path
) -> None:
    database = empty_database
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
        wanted = await conn.fetchval("SELECT statement_merchants_sha256($1)", ["QC2", "QC1"])
    finally:
        await conn.close()

    # The digest of the row stored before is the one of its merchants in any order: the same file is found
    # already imported, and the console's lookup (IMPORT_BY_SPAN) finds it.
    assert stored == wanted
    pool = await asyncpg.create_pool(database, min_size=1, max_size=1)
    try:
        again = await import_statement(pool, path, StatementLayout())
        quiet = await import_statement(
            pool, path, StatementLayout(), period=(date(2024, 5, 1), date(2024, 5, 2)), merchants=["QC1", "QC2"]
        )
    finally:
        await pool.close()
    assert (again.already_imported, quiet.already_imported) == (True, False)
