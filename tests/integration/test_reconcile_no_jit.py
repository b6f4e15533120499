"""A reconcile batch's statements are never JIT-compiled (decision 0048).

On tables the planner has no statistics for (a new database, a bulk load before autovacuum's ANALYZE),
the ledger statement's estimated cost passed all three JIT thresholds, and Postgres compiled it with
optimisation on every batch: ~2.8 s of CPU per 2,000 keys, found by the scale-out benchmark (two receivers
and two workers on a fresh database), where it cost ingest a third of its throughput.

Observed, not assumed: every connection of the test's pool loads auto_explain and sends each statement's
plan to the client, and sets the JIT thresholds to zero, so that any statement not opted out of JIT is
compiled, whatever the estimates. A control statement on the same connections shows that JIT then
appears in a plan (when the server has JIT at all).
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from bench.recon_generate import GENERATE
from ottrecon.reconciliation.reconcile import reconcile_pending

ORDERS = 200
TZ = "America/Toronto"
# Any statement's cost is above zero: with these, every plan that may be JIT-compiled is.
JIT_EVERYTHING = {"jit": "on", "jit_above_cost": "0", "jit_inline_above_cost": "0", "jit_optimize_above_cost": "0"}
# Every statement's plan, sent to the client as a LOG message. Set on every acquisition: the pool's RESET ALL
# on release returns auto_explain's settings to their defaults (off), as its reset drops log listeners.
EXPLAIN_EVERYTHING = {
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_format": "json",
    "auto_explain.log_nested_statements": "on",
    "client_min_messages": "log",
}


def plans_of(messages: list[str]) -> list[dict[str, Any]]:
    """The JSON plans auto_explain sent ("duration: … ms  plan:\\n{…}")."""
    return [json.loads(text.split("plan:", 1)[1]) for text in messages if "plan:" in text]


@pytest.fixture
async def explained_pool(database_url: str) -> Any:
    """A pool whose connections report every statement's plan, and JIT-compile whatever they may."""
    messages: list[str] = []

    def collect(_conn: object, message: asyncpg.PostgresLogMessage) -> None:
        messages.append(message.message)

    async def init(conn: asyncpg.Connection) -> None:
        await conn.execute("LOAD 'auto_explain'")  # stays loaded for the connection's life

    async def setup(conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> None:
        # SET, not set_config(): a utility statement has no plan of its own to report.
        await conn.execute("; ".join(f"SET {name} = '{value}'" for name, value in EXPLAIN_EVERYTHING.items()))
        conn.add_log_listener(collect)  # the pool's reset on release removes it

    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, init=init, setup=setup, server_settings=JIT_EVERYTHING
    )
    try:
        yield pool, messages
    finally:
        await pool.close()


# The listener is the observation: it stays on the pool's connections on purpose (asyncpg warns on release).
@pytest.mark.filterwarnings("ignore:.*active log listener:asyncpg.exceptions.InterfaceWarning")
async def test_reconcile_batches_are_not_jit_compiled(db: asyncpg.Connection, explained_pool: Any) -> None:
    pool, messages = explained_pool
    for _, sql in GENERATE:
        await db.execute(sql, *([ORDERS] if "$1" in sql else []))
    jit_available = await db.fetchval("SELECT pg_jit_available()")

    report = await reconcile_pending(pool, business_tz=TZ, concurrency=2)

    assert report.keys >= ORDERS
    plans = plans_of(messages)
    texts = [plan["Query Text"] for plan in plans]
    assert any("Recompute the ledger rows" in text for text in texts), "no plan of the ledger statement was seen"
    compiled = [plan["Query Text"].strip().splitlines()[0][:80] for plan in plans if "JIT" in plan]
    assert compiled == [], f"JIT-compiled during reconcile: {compiled}"

    # The control: the same connections compile an ordinary statement (so the observation above can see JIT).
    messages.clear()
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT count(*) FROM ledger")
    control = [plan for plan in plans_of(messages) if "FROM ledger" in plan["Query Text"]]
    assert len(control) == 1
    assert ("JIT" in control[0]) == jit_available
