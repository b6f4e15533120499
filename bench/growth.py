"""Postgres growth: callbacks, rejected_callbacks and ledger at 1M and 10M rows (issue 13, decision 0037).

`python -m bench.growth [--sizes 1000000,10000000]`. For each size N, in its own throwaway
`ottrecon_bench_*` database (migrated by the real runner, dropped at the end even on Ctrl-C):

1. generate N rows in each table, spread evenly over the 12 months before now, with the widths
   the service writes (an envelope with its Base64 data, the verified fields), by one
   INSERT … SELECT generate_series per table into the indexed tables (so the unique indexes grow
   by random inserts, as in production); user triggers are off while generating;
2. measure, with the triggers on: table and index sizes; inserting 20 batches of 500 new rows with
   the statement the service uses for that table; 2,000 point lookups by the key idempotency rests
   on (the unique constraint), at random over all N rows; one business day of the ledger read as
   the console's keyset page; and deleting the oldest month (1/12 of the rows) in 5,000-row
   batches, against dropping a table holding the same rows (what detaching and dropping a monthly
   partition costs).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.databases import ThrowawayDatabases
from bench.support import BenchError, dump_json, facts_text, machine_facts, server_url, stop_on_sigterm, table
from ottrecon.callbacks import store

DEFAULT_SIZES = (1_000_000, 10_000_000)
TABLES = ("callbacks", "rejected_callbacks", "ledger")
MONTHS = 12
INSERT_BATCHES = 20
BATCH_ROWS = 500
LOOKUPS = 2000
DELETE_BATCH = 5000
MERCHANTS = 50

# N rows over the 12 months before $2 (now); $1 = N. Widths as the service writes them: the
# envelope carries about 220 characters of Base64 data, the verified data six short fields.
GENERATE = {
    "callbacks": """
INSERT INTO callbacks (merchant_id, md5, order_id, rsp_code, envelope, data, signkey_index, received_at)
SELECT m, d, o, 'SUCCESS',
       jsonb_build_object('rsp_code', 'SUCCESS', 'rsp_msg', 'success', 'merchant_id', m, 'md5', d,
                          'data', repeat(encode(sha256(i::text::bytea), 'base64'), 5)),
       jsonb_build_object('amount', (100 + i % 9900)::text, 'bizpay_order_id', 'AL' || i, 'tip', '0',
                          'merchant_id', m, 'order_id', o, 'finish_time', '20261130120000'),
       0, $2::timestamptz - interval '365 days' + (i::float8 / $1) * interval '365 days'
FROM generate_series(1, $1::int) AS i,
     LATERAL (SELECT 'M' || lpad((i % 50)::text, 8, '0') AS m, upper(md5(i::text)) AS d, 'O' || i AS o) k
""",
    "rejected_callbacks": """
INSERT INTO rejected_callbacks (merchant_id, md5, envelope, envelope_sha256, reason, detail, received_at,
                                last_received_at)
SELECT m, d, jsonb_build_object('rsp_code', 'SUCCESS', 'rsp_msg', 'success', 'merchant_id', m, 'md5', d,
                                'data', repeat(encode(sha256(i::text::bytea), 'base64'), 5)),
       encode(sha256(('r' || i)::bytea), 'hex'), 'digest_mismatch', 'the md5 does not match the decrypted data',
       t, t
FROM generate_series(1, $1::int) AS i,
     LATERAL (SELECT 'M' || lpad((i % 50)::text, 8, '0') AS m, upper(md5('r' || i)) AS d,
                     $2::timestamptz - interval '365 days' + (i::float8 / $1) * interval '365 days' AS t) k
""",
    "ledger": """
INSERT INTO ledger (merchant_id, order_id, kind, channel, order_status, expected_amount, expected_tip,
                    received_amount, received_tip, channel_payment_ids, callback_count, paid_source, recon_status,
                    created_at, paid_at, business_date)
SELECT 'M' || lpad((i % 50)::text, 8, '0'), 'O' || i, 'ACTIVEPAY', 'ALIPAY', 'paid', 100 + i % 9900, 0,
       100 + i % 9900, 0, ARRAY['AL' || i], 1, 'callback',
       CASE WHEN i % 100 = 0 THEN 'amount_mismatch' ELSE 'matched' END, t, t, t::date
FROM generate_series(1, $1::int) AS i,
     LATERAL (SELECT $2::timestamptz - interval '365 days' + (i::float8 / $1) * interval '365 days' AS t) k
""",
}

# What each table is looked up by: the unique key idempotency rests on ($1, $2 from an existing row).
LOOKUP = {
    "callbacks": "SELECT id FROM callbacks WHERE merchant_id = $1 AND md5 = $2",
    "rejected_callbacks": "SELECT id FROM rejected_callbacks WHERE envelope_sha256 = $1 AND $2::text IS NOT NULL",
    "ledger": "SELECT recon_status FROM ledger WHERE merchant_id = $1 AND order_id = $2",
}
# The oldest month: the rows a monthly retention (or a dropped partition) would remove.
OLDEST_MONTH = {
    "callbacks": "received_at < $1",
    "rejected_callbacks": "last_received_at < $1",
    "ledger": "business_date < $1::timestamptz::date",
}
# The callbacks the worker inserts (its RECORD_VERIFIED without the payments it also writes, which
# are not among the tables measured here).
INSERT_CALLBACKS = """
INSERT INTO callbacks (merchant_id, md5, order_id, rsp_code, envelope, data, signkey_index, received_at)
SELECT m, d, o, 'SUCCESS', jsonb_build_object('merchant_id', m, 'md5', d, 'data', repeat(d, 7)),
       jsonb_build_object('order_id', o, 'amount', '100'), 0, now()
FROM unnest($1::text[], $2::text[], $3::text[]) AS t(m, d, o)
ON CONFLICT ON CONSTRAINT callbacks_body_key DO NOTHING
"""
# A reconcile tick's ledger write: half the keys new, half existing ones updated.
UPSERT_LEDGER = """
INSERT INTO ledger (merchant_id, order_id, recon_status, business_date)
SELECT m, o, 'matched', current_date FROM unnest($1::text[], $2::text[]) AS t(m, o)
ON CONFLICT ON CONSTRAINT ledger_pkey DO UPDATE SET reconciled_at = now(), recon_status = EXCLUDED.recon_status
"""
# The console's ledger page for one business day (keyset pagination on ledger_keyset_idx).
LEDGER_DAY_PAGE = """
SELECT merchant_id, order_id, recon_status FROM ledger WHERE business_date = $1
ORDER BY business_date, merchant_id, order_id LIMIT 50
"""
INDEX_SIZES = """
SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS bytes
FROM pg_index WHERE indrelid = $1::regclass ORDER BY 1
"""


@dataclass
class TableGrowth:
    """One table at one size."""

    table: str
    rows: int
    generate_s: float = 0.0
    heap_mb: float = 0.0
    indexes_mb: dict[str, float] = field(default_factory=dict)
    insert_batch_ms: float = 0.0  # median of INSERT_BATCHES batches of BATCH_ROWS new rows
    lookup_us: float = 0.0  # median point lookup by the unique key
    delete_month_rows: int = 0
    delete_month_s: float = 0.0  # batched DELETE of the oldest month
    drop_month_s: float = 0.0  # DROP TABLE of a table holding the same rows (a dropped partition)


@dataclass
class GrowthReport:
    """Every table at every size, plus the ledger's day page timing per size."""

    sizes: list[int]
    tables: list[TableGrowth] = field(default_factory=list)
    ledger_day_page_ms: dict[int, float] = field(default_factory=dict)


async def _timed(step: Awaitable[object]) -> float:
    started = time.perf_counter()
    await step
    return time.perf_counter() - started


def _merchant(i: int) -> str:
    return f"M{i % MERCHANTS:08d}"


def existing_key(name: str, i: int) -> tuple[str, str]:
    """The unique key GENERATE gave row i of a table (as the lookup statement takes it)."""
    if name == "callbacks":
        return _merchant(i), hashlib.md5(str(i).encode()).hexdigest().upper()
    if name == "rejected_callbacks":
        return hashlib.sha256(f"r{i}".encode()).hexdigest(), ""
    return _merchant(i), f"O{i}"


async def measure_size(url: str, size: int, now: datetime, report: GrowthReport, log: Callable[[str], None]) -> None:
    """Generate size rows per table in url's database, then measure each table."""
    conn = await asyncpg.connect(url)
    try:
        for name in TABLES:
            growth = TableGrowth(name, size)
            await conn.execute(f"ALTER TABLE {name} DISABLE TRIGGER USER")
            growth.generate_s = await _timed(conn.execute(GENERATE[name], size, now))
            await conn.execute(f"ALTER TABLE {name} ENABLE TRIGGER USER")
            await conn.execute(f"VACUUM ANALYZE {name}")  # autovacuum may be off (it is on the shared dev server)
            log(f"  {size:,} {name}: generated in {growth.generate_s:.0f} s")
            await _sizes(conn, growth)
            growth.insert_batch_ms = await _inserts(conn, name, size)
            growth.lookup_us = await _lookups(conn, name, size)
            if name == "ledger":
                day = (now - timedelta(days=180)).date()
                times = [await _timed(conn.fetch(LEDGER_DAY_PAGE, day)) for _ in range(20)]
                report.ledger_day_page_ms[size] = 1000 * statistics.median(times)
            await _retention(conn, name, now, growth)
            report.tables.append(growth)
            # Each result as soon as it is known: a 10M run takes an hour, and may be stopped before the end.
            log(f"  {size:,} {name}: {growth}")
    finally:
        await conn.close()


async def _sizes(conn: asyncpg.Connection, growth: TableGrowth) -> None:
    growth.heap_mb = await conn.fetchval("SELECT pg_table_size($1::regclass)", growth.table) / 2**20
    rows = await conn.fetch(INDEX_SIZES, growth.table)
    growth.indexes_mb = {row["name"]: row["bytes"] / 2**20 for row in rows}


async def _inserts(conn: asyncpg.Connection, name: str, size: int) -> float:
    """Median ms per batch of BATCH_ROWS new rows (random keys, as the service's are)."""
    times = []
    for batch in range(INSERT_BATCHES):
        tags = [f"{batch}-{i}-{random.random()}" for i in range(BATCH_ROWS)]
        if name == "callbacks":
            merchants = [_merchant(i) for i in range(BATCH_ROWS)]
            md5s = [f"{random.getrandbits(128):032X}" for _ in tags]
            step = conn.execute(INSERT_CALLBACKS, merchants, md5s, [f"N{t}" for t in tags])
        elif name == "rejected_callbacks":
            now = datetime.now(UTC)
            shas = [f"{random.getrandbits(256):064x}" for _ in tags]
            envelopes = [f'{{"md5": "{sha[:32]}", "data": "{sha * 4}"}}' for sha in shas]
            columns: list[list[Any]] = [["M00000001"] * BATCH_ROWS, [s[:32].upper() for s in shas], envelopes, shas]
            columns += [["digest_mismatch"] * BATCH_ROWS, ["bench"] * BATCH_ROWS, [now] * BATCH_ROWS]
            step = conn.execute(store.RECORD_REJECTED, *columns)
        else:
            existing = [existing_key(name, i) for i in random.sample(range(1, size + 1), BATCH_ROWS // 2)]
            merchants = [m for m, _ in existing] + [_merchant(i) for i in range(BATCH_ROWS // 2)]
            orders = [o for _, o in existing] + [f"N{t}" for t in tags[: BATCH_ROWS // 2]]
            step = conn.execute(UPSERT_LEDGER, merchants, orders)
        times.append(await _timed(step))
    return 1000 * statistics.median(times)


async def _lookups(conn: asyncpg.Connection, name: str, size: int) -> float:
    """Median µs of a point lookup by the unique key, keys drawn uniformly from all rows (mostly cold at 10M)."""
    keys = [existing_key(name, random.randint(1, size)) for _ in range(LOOKUPS)]
    statement = await conn.prepare(LOOKUP[name])
    times = []
    for key in keys:
        started = time.perf_counter()
        if await statement.fetchval(key[0], key[1]) is None:
            raise BenchError(f"{name}: a sampled key was not found")
        times.append(time.perf_counter() - started)
    return 1e6 * statistics.median(times)


async def _retention(conn: asyncpg.Connection, name: str, now: datetime, growth: TableGrowth) -> None:
    cutoff = now - timedelta(days=365) + timedelta(days=365 / MONTHS)
    where = OLDEST_MONTH[name]
    # The partition-drop comparison: the same rows in a table of their own, dropped.
    await conn.execute(f"CREATE TABLE month_copy AS SELECT * FROM {name} WHERE {where}", cutoff)
    growth.drop_month_s = await _timed(conn.execute("DROP TABLE month_copy"))
    key, columns = ("id", "id") if name != "ledger" else ("(merchant_id, order_id)", "merchant_id, order_id")
    delete_batch = f"""
        DELETE FROM {name} WHERE {key} IN (SELECT {columns} FROM {name} WHERE {where} LIMIT {DELETE_BATCH})"""
    started = time.perf_counter()
    while True:
        status = await conn.execute(delete_batch, cutoff)
        deleted = int(status.split()[-1])
        growth.delete_month_rows += deleted
        if deleted < DELETE_BATCH:
            break
    growth.delete_month_s = time.perf_counter() - started


def run(sizes: Sequence[int], admin_url: str, log: Callable[[str], None]) -> GrowthReport:
    """Each size in its own database (a clone of a migrated template); all dropped at the end."""
    report = GrowthReport(list(sizes))
    now = datetime.now(UTC)
    with ThrowawayDatabases(admin_url) as databases:
        for size in sizes:
            url = databases.clone(f"g{size}")
            asyncio.run(measure_size(url, size, now, report, log))
            databases.drop_clone(f"g{size}")
    return report


def summary(report: GrowthReport) -> str:
    """The measures per table and size, then every index's size per size."""
    rows = []
    for t in sorted(report.tables, key=lambda t: (TABLES.index(t.table), t.rows)):
        rows.append(
            [
                f"{t.table} {t.rows:,}",
                f"{t.generate_s:,.0f}",
                f"{t.heap_mb:,.0f}",
                f"{sum(t.indexes_mb.values()):,.0f}",
                f"{t.insert_batch_ms:,.1f}",
                f"{t.lookup_us:,.0f}",
                f"{t.delete_month_rows:,} in {t.delete_month_s:,.1f} s",
                f"{1000 * t.drop_month_s:,.0f} ms",
            ]
        )
    header = [
        "table, rows",
        "gen s",
        "heap MB",
        "index MB",
        "insert 500 ms",
        "lookup µs",
        "delete oldest month",
        "drop",
    ]
    index_rows = []
    for name in TABLES:
        per = sorted((t for t in report.tables if t.table == name), key=lambda t: t.rows)
        for index in per[0].indexes_mb if per else []:
            index_rows.append([index, *(f"{t.indexes_mb.get(index, 0):,.1f}" for t in per)])
    sizes = sorted(report.sizes)
    pages = ", ".join(f"{size:,}: {ms:.1f} ms" for size, ms in sorted(report.ledger_day_page_ms.items()))
    return "\n".join(
        [
            table(header, rows),
            "",
            table(["index MB at", *(f"{size:,}" for size in sizes)], index_rows),
            "",
            f"ledger page of one business day (50 rows, keyset): {pages}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.growth`: generate, measure, print; exit 1 when it could not run."""
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES), help="rows per table, per run")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    try:
        admin_url = server_url("DATABASE_URL", os.environ)
        print(facts_text(machine_facts(server_url("REDIS_URL", os.environ), admin_url)) + "\n", flush=True)
        report = run(sizes, admin_url, lambda text: print(text, file=sys.stderr, flush=True))
    except BenchError as exc:
        print(f"bench.growth: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.growth: interrupted; databases dropped", file=sys.stderr)
        return 130
    print(summary(report))
    if args.json is not None:
        dump_json(args.json, asdict(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
