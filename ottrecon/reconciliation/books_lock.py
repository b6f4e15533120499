"""The books lock: what closes, statement imports and reconciler batches take turns on."""

from __future__ import annotations

from ottrecon.db import Connection

# Two-int advisory form; the reconciler's key locks use space 7413. A close or reopen holds it exclusively;
# every reconciler batch holds it shared from before its ledger recompute until it commits. So a close sees no
# batch half done, and a batch that books an adjustment sees every close committed before it (decision 0031:
# an adjustment can never land on a date closed under it). A statement import holds it exclusively too, so that
# its trigger sees every batch and import committed before it, and every later batch sees it (decision 0047).
BOOKS_LOCK = (7414, 0)
LOCK_BOOKS = "SELECT pg_advisory_xact_lock($1, $2)"
LOCK_BOOKS_SHARED = "SELECT pg_advisory_xact_lock_shared($1, $2)"


async def hold_books(conn: Connection) -> None:
    """Hold the books lock exclusively until the transaction ends (a close, a reopen, a statement import)."""
    await conn.execute(LOCK_BOOKS, *BOOKS_LOCK)


async def hold_books_shared(conn: Connection) -> None:
    """Hold the books lock shared until the transaction ends (a reconciler batch)."""
    await conn.execute(LOCK_BOOKS_SHARED, *BOOKS_LOCK)
