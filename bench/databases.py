"""Throwaway Postgres databases for the worker benchmark: one migrated template, fresh clones, all dropped."""

from __future__ import annotations

import asyncio
import secrets
from types import TracebackType

import asyncpg

from bench.support import with_database
from ottrecon.migrations import migrate

PREFIX = "ottrecon_bench_"


class ThrowawayDatabases:
    """Creates databases on the server admin_url points at; drops every one of them on exit.

    The template is migrated by the real runner (ottrecon.migrations.migrate), as the tests
    build theirs; each measured drain gets its own clone, so no round sees another's rows.
    """

    def __init__(self, admin_url: str) -> None:
        self._admin_url = admin_url
        self._tag = secrets.token_hex(4)
        self._template = f"{PREFIX}{self._tag}_tpl"
        self._created: list[str] = []

    def __enter__(self) -> ThrowawayDatabases:
        self._remember(self._template)
        try:
            asyncio.run(self._create(self._template, None))
            asyncio.run(migrate(self.url(self._template)))
        except BaseException:
            asyncio.run(self._drop(self._created))
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        asyncio.run(self._drop(self._created))

    @property
    def template_url(self) -> str:
        """The migrated template (never written to by a benchmark)."""
        return self.url(self._template)

    def url(self, database: str) -> str:
        """The admin URL pointing at another database."""
        return with_database(self._admin_url, database)

    def clone(self, suffix: str, source: str | None = None) -> str:
        """A new database copied from the template, or from source (the URL of one made here, nobody
        connected to it); returns its URL."""
        name = f"{PREFIX}{self._tag}_{suffix}"
        self._remember(name)
        asyncio.run(self._create(name, self._template if source is None else self._name_of(source)))
        return self.url(name)

    def drop_clone(self, suffix: str) -> None:
        """Drop a clone made by clone(suffix) now, not at exit (a big one should not wait for the next)."""
        name = f"{PREFIX}{self._tag}_{suffix}"
        asyncio.run(self._drop([name]))

    def drop(self, url: str) -> None:
        """Drop a database made here before the end (a large clone no longer needed frees its disk)."""
        name = self._name_of(url)
        asyncio.run(self._drop([name]))
        self._created.remove(name)

    def _name_of(self, url: str) -> str:
        name = url.rsplit("/", 1)[-1]
        if name not in self._created:
            raise ValueError(f"not a database of this benchmark: {name}")
        return name

    def _remember(self, name: str) -> None:
        # Remembered before CREATE, so an interrupt between the two still drops it (IF EXISTS).
        self._created.append(name)

    async def _create(self, name: str, template: str | None) -> None:
        conn = await asyncpg.connect(self._admin_url)
        try:
            clause = f' TEMPLATE "{template}"' if template else ""
            await conn.execute(f'CREATE DATABASE "{name}"{clause}')
        finally:
            await conn.close()

    async def _drop(self, names: list[str]) -> None:
        conn = await asyncpg.connect(self._admin_url)
        try:
            # Clones first: a template cannot be dropped while a clone is being made from it.
            for name in reversed(names):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
