"""The migration runner: idempotent, safe concurrently, refuses a database from newer code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from ottrecon.errors import MigrationError
from ottrecon.migrations import check_schema, discover, migrate


async def test_migrate_applies_everything_once_even_when_run_concurrently(empty_database: str) -> None:
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(3)))
    applied = sorted(len(r) for r in results)
    assert applied == [0, 0, len(discover())]
    assert await migrate(empty_database) == []
    conn = await asyncpg.connect(empty_database)
    try:
        await check_schema(conn)
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
    finally:
        await conn.close()
    assert versions == [m.version for m in discover()]


async def test_migrate_refuses_a_database_from_newer_code(empty_database: str) -> None:
    await migrate(empty_database)
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'from_the_future')")
        with pytest.raises(MigrationError, match="9999"):
            await check_schema(conn)
    finally:
        await conn.close()
    with pytest.raises(MigrationError, match="does not know"):
        await migrate(empty_database)


async def test_check_schema_asks_for_migrate_on_a_fresh_database(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        with pytest.raises(MigrationError, match="ottrecon migrate"):
            await check_schema(conn)
    finally:
        await conn.close()


def test_discover_rejects_badly_named_or_gapped_files(tmp_path: Path) -> None:
    (tmp_path / "0001_first.sql").write_text("SELECT 1")
    (tmp_path / "0003_third.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="without gaps"):
        discover(tmp_path)
    (tmp_path / "0002 bad name.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="NNNN_description"):
        discover(tmp_path)


def test_discover_refuses_a_directory_without_migrations(tmp_path: Path) -> None:
    # An install that lost its SQL files must not look like a database with nothing to do.
    (tmp_path / "README.txt").write_text("no migrations here")
    with pytest.raises(MigrationError, match="no migrations found"):
        discover(tmp_path)


async def test_check_schema_fails_on_an_empty_database_when_no_migrations_are_found(
    empty_database: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        with pytest.raises(MigrationError, match="no migrations found"):
            await check_schema(conn, tmp_path)
    finally:
        await conn.close()


async def test_migrate_applies_nothing_and_fails_when_no_migrations_are_found(
    empty_database: str, tmp_path: Path
) -> None:
    with pytest.raises(MigrationError, match="no migrations found"):
        await migrate(empty_database, tmp_path)
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
    finally:
        await conn.close()


def test_packaged_migrations_are_the_repository_sql_files() -> None:
    # The runner reads the installed package ottrecon.sql; in a checkout that is sql/ itself.
    repo_sql = Path(__file__).resolve().parents[2] / "sql"
    expected = sorted(path.name for path in repo_sql.glob("*.sql"))
    assert expected, "the repository has no migrations"
    assert [f"{m.version:04d}_{m.name}.sql" for m in discover()] == expected
    assert [m.sql for m in discover()] == [(repo_sql / name).read_text(encoding="utf-8") for name in expected]
