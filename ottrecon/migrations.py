"""Forward-only schema migrations: sql/NNNN_name.sql applied in order under an advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

import asyncpg

from ottrecon import db
from ottrecon.errors import MigrationError

# The repository's top-level sql/ is installed as the package ottrecon.sql (pyproject.toml), so the
# migrations travel inside the wheel and are found the same way in a checkout and in an install.
SQL_PACKAGE = "ottrecon.sql"
# Any fixed number works; it only has to be the same in every process that migrates.
MIGRATION_LOCK_ID = 7_413_020_001
_FILE_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")

# The version table is the runner's own, so it is created here rather than by a migration.
CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One SQL file: its version number, name and text."""

    version: int
    name: str
    sql: str


def discover(sql_dir: Traversable | None = None) -> list[Migration]:
    """The migrations in sql_dir (default: the installed ottrecon.sql package), ordered by version.

    A gap, a duplicate number or a badly named file is an error, and so is finding none at all:
    an install without its SQL files must never pass for a database with nothing to do.
    """
    where = sql_dir if sql_dir is not None else files(SQL_PACKAGE)
    migrations = []
    for path in sorted((p for p in where.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_description.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    if not migrations:
        raise MigrationError(f"no migrations found in {where}: the installation is incomplete")
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3… without gaps; found {versions}")
    return migrations


async def applied_versions(conn: db.Connection) -> set[int]:
    """Versions recorded in the database (empty when it was never migrated)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}


async def migrate(dsn: str, sql_dir: Traversable | None = None) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return those applied.

    Safe to run from several processes at once (the advisory lock serialises them) and
    idempotent. Refuses to touch a database that holds a version this code does not know:
    that database belongs to newer code.
    """
    migrations = discover(sql_dir)
    async with db.translate_errors():
        conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        try:
            await conn.execute(CREATE_VERSION_TABLE)
            done = await applied_versions(conn)
            unknown = done - {m.version for m in migrations}
            if unknown:
                raise MigrationError(
                    f"the database has migration(s) {sorted(unknown)} that this code does not know; "
                    "deploy the newer code instead"
                )
            applied = []
            for migration in migrations:
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                applied.append(migration)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    finally:
        await conn.close()


async def check_schema(conn: db.Connection, sql_dir: Traversable | None = None) -> None:
    """Raise MigrationError unless the database is at exactly this code's schema version."""
    expected = {m.version for m in discover(sql_dir)}
    done = await applied_versions(conn)
    if done != expected:
        missing = sorted(expected - done)
        extra = sorted(done - expected)
        raise MigrationError(
            f"database schema does not match this code (missing {missing}, unknown {extra}): run `ottrecon migrate`"
        )
