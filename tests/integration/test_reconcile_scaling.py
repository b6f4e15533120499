"""The reconciler's statements do the same work per key whatever the batch size (issue 13).

Work is counted, not timed (the machine is shared): EXPLAIN (ANALYZE, FORMAT JSON) of each statement on
generated evidence (bench/recon_generate.py, the benchmark's own mix). A plan node run once per key (a
nested loop's inner side, a subplan) must touch that key's rows only, a handful: a node that reads the
whole batch, or a whole table, once per key makes the batch's work grow with the square of its size or
with the tables. The ledger recompute did (its keys CTE hash-joined inside a per-key nested loop).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from bench.recon_generate import GENERATE
from ottrecon.reconciliation.reconcile import BOOK_REFUNDS, MARK_ALL_DIRTY, RECONCILE_LEDGER, SYNC_ALERTS

ORDERS = 6000
SIZES = (100, 300, 1000, 3000)
LARGE = max(SIZES)
TZ = "America/Toronto"


# A key has a few rows in each table (callbacks, attempts, statement lines); a rescan reads hundreds.
ROWS_PER_KEY_LOOP = 10


def repeated_scans(node: dict[str, Any]) -> list[str]:
    """Plan nodes run more than once (per key) that produced more than a key's rows per run."""
    found = []
    if node.get("Actual Loops", 1) > 1 and node.get("Actual Rows", 0) > ROWS_PER_KEY_LOOP:
        name = " ".join(str(node.get(k, "")) for k in ("Node Type", "Relation Name", "CTE Name", "Alias"))
        found.append(f"{name.strip()}: {node['Actual Rows']} rows x {node['Actual Loops']} loops")
    for child in node.get("Plans", ()):
        found += repeated_scans(child)
    return found


async def explain(conn: asyncpg.Connection, sql: str, keys: Sequence[tuple[str, str]], *extra: str) -> Any:
    """The executed plan of a statement for these keys (rolled back: the database is left unchanged)."""
    merchants = [m for m, _ in keys]
    orders = [o for _, o in keys]
    transaction = conn.transaction()
    await transaction.start()
    try:
        raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", merchants, orders, *extra)
    finally:
        await transaction.rollback()
    return json.loads(raw)[0]["Plan"]


@pytest.fixture
async def generated(db: asyncpg.Connection) -> list[tuple[str, str]]:
    """ORDERS orders of every scenario, not yet reconciled; their keys in queue (change) order."""
    for _, sql in GENERATE:
        await db.execute(sql, *([ORDERS] if "$1" in sql else []))
    await db.execute("ANALYZE")
    rows = await db.fetch(
        "SELECT merchant_id, order_id FROM recon_dirty GROUP BY merchant_id, order_id ORDER BY min(id) LIMIT $1", LARGE
    )
    return [(r["merchant_id"], r["order_id"]) for r in rows]


@pytest.mark.parametrize(
    ("name", "sql", "extra"),
    [("ledger", RECONCILE_LEDGER, (TZ,)), ("refunds", BOOK_REFUNDS, (TZ,)), ("alerts", SYNC_ALERTS, ())],
)
async def test_work_per_key_does_not_grow_with_the_batch(
    db: asyncpg.Connection, generated: list[tuple[str, str]], name: str, sql: str, extra: tuple[str, ...]
) -> None:
    # The alert sync reads ledger rows: reconcile them first (committed), as a batch would have.
    if name == "alerts":
        merchants, orders = [m for m, _ in generated], [o for _, o in generated]
        await db.execute(RECONCILE_LEDGER, merchants, orders, TZ)
    # Batches of several sizes: the planner's choice depends on how many keys it expects.
    for size in SIZES:
        plan = await explain(db, sql, generated[:: len(generated) // size], *extra)
        assert repeated_scans(plan) == [], f"{name}, batch of {size}"


async def test_a_bulk_write_queues_its_keys_in_key_order(db: asyncpg.Connection) -> None:
    """The reconciler claims the oldest changes first (by id). A statement that changes many keys queues them
    in key order, so a batch of a large backlog is a run of neighbouring keys, whose evidence sits on
    neighbouring pages, not keys spread over every table (at 1M orders most of those lookups missed the cache)."""
    await db.execute(GENERATE[0][1], ORDERS)  # the population
    for label, sql in GENERATE[1:]:
        first = await db.fetchval("SELECT coalesce(max(id), 0) FROM recon_dirty")
        await db.execute(sql, *([ORDERS] if "$1" in sql else []))
        queued = await db.fetch("SELECT merchant_id, order_id FROM recon_dirty WHERE id > $1 ORDER BY id", first)
        keys = [(r["merchant_id"], r["order_id"]) for r in queued]
        assert keys == sorted(keys), f"{label}: {len(keys)} keys queued out of key order"
    # And a rebuild of everything (ottrecon reconcile --all).
    first = await db.fetchval("SELECT max(id) FROM recon_dirty")
    await db.execute(MARK_ALL_DIRTY)
    keys = [
        (r["merchant_id"], r["order_id"])
        for r in await db.fetch("SELECT merchant_id, order_id FROM recon_dirty WHERE id > $1 ORDER BY id", first)
    ]
    assert len(keys) > ORDERS and keys == sorted(keys)
