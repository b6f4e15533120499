"""Reconciliation and report export at scale: generate N orders of evidence, reconcile, export, check linearity.

`python -m bench.reconcile [--sizes 100000,300000,1000000]`. Each size runs in its own throwaway
database (migrated by the real runner, dropped at the end even on failure or Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import asyncpg

from bench.databases import ThrowawayDatabases
from bench.support import (
    REPO_ROOT,
    BenchError,
    child_env,
    dump_json,
    facts_text,
    machine_facts,
    server_url,
    stop_on_sigterm,
    table,
)
from worker.recon_jobs import MAX_BATCHES_PER_TICK
from worker.reconcile import reconcile_pending
from worker.reports import export_report

BUSINESS_TZ = "America/Toronto"
DEFAULT_SIZES = (100_000, 300_000, 1_000_000)
# The exports measured, each in its own child process writing to /dev/null.
EXPORTS = ("ledger", "summary", "mismatches")

# Evidence generation, set-based: each step is one INSERT … SELECT, so the statement-level
# triggers fill recon_dirty exactly as they do for the service's batch writes. $1 is N.
# Scenario of order i: bucket b = i*37 mod 100 (37 is prime to 100, so buckets interleave):
#   0-66 ACTIVEPAY paid by callback         67 … callback amount short (amount_mismatch)
#   68   … two channel payments (duplicate) 69 … paid, then half refunded
#   70-84 PASSIVEPAY paid by its response    85 ACTIVEPAY paid, proven by a status query only (missing_callback)
#   86   ACTIVEPAY flagged unpaid            87 … flagged unpaid, then paid by callback (paid_after_flagged)
#   88-91 ACTIVEPAY awaiting payment         92-95 ACTIVEPAY closed unpaid
#   96-97 PASSIVEPAY declined                98-99 PASSIVEPAY failed
# Plus N/500 orphan payments (callbacks for orders we never created) and a statement with every paid
# order except i mod 250 = 0 (not_in_statement), amounts +1 cent where i mod 333 = 0 (amount_differs),
# and N/1000 lines for unknown orders (not_in_ledger).
GENERATE: tuple[tuple[str, str], ...] = (
    (
        "population",
        # The scenario of every order (a temporary table: generation plumbing, not a service table).
        """
        CREATE TEMP TABLE gen AS
        SELECT g.*,
               CASE WHEN b BETWEEN 70 AND 84 OR b >= 96 THEN 'PASSIVEPAY' ELSE 'ACTIVEPAY' END AS kind,
               CASE WHEN b <= 68 OR b BETWEEN 70 AND 85 OR b = 87 THEN 'paid' WHEN b = 69 THEN 'partially_refunded'
                    WHEN b = 86 THEN 'unpaid' WHEN b BETWEEN 88 AND 91 THEN 'awaiting_payment'
                    WHEN b BETWEEN 92 AND 95 THEN 'closed' WHEN b IN (96, 97) THEN 'declined' ELSE 'failed' END
                   AS status,
               CASE WHEN b <= 69 OR b = 87 THEN 'callback' WHEN b BETWEEN 70 AND 84 THEN 'response'
                    WHEN b = 85 THEN 'query' END AS paid_by,
               CASE WHEN b = 67 THEN amount - 1 - i % 50 ELSE amount END AS received,
               CASE WHEN b = 87 THEN created_at + interval '20 minutes'
                    ELSE created_at + make_interval(secs => 30 + i % 60) END AS paid_at
        FROM (
            -- Merchant and tip must not follow i mod 100 (the bucket), or one merchant would get every unpaid order.
            SELECT i, (i * 37) % 100 AS b, 'BENCH0000' || (i / 100) % 5 AS merchant_id,
                   'B' || lpad(i::text, 19, '0') AS order_id,
                   100 + (i * 7919) % 99900 AS amount, CASE WHEN (i / 7) % 4 = 0 THEN i % 500 ELSE 0 END AS tip,
                   (ARRAY['ALIPAY', 'WECHATPAY', 'UNIONPAY'])[1 + i % 3] AS biz_type,
                   (ARRAY['AL', 'WX', 'UP'])[1 + i % 3] || lpad(i::text, 16, '0') AS chan,
                   timestamptz '2024-05-01 00:00:00 America/Toronto' + make_interval(secs => (i - 1) * 2592000.0 / $1)
                       AS created_at
            FROM generate_series(1, $1::int8) AS i
        ) g
        """,
    ),
    (
        "orders",
        # Orders as the API stores them, already carried to their final state by the submission worker.
        """
        INSERT INTO orders (
            merchant_id, order_id, kind, biz_type, amount, tip, auth_code, idempotency_key, request_sha256, status,
            code_url, paid_amount, paid_source, paid_at, unpaid_flagged_at, check_attempts, created_at, updated_at
        )
        SELECT merchant_id, order_id, kind, biz_type, amount, tip,
               CASE WHEN kind = 'PASSIVEPAY' THEN '28' || lpad(i::text, 16, '0') END, 'key-' || i, md5(order_id),
               status, CASE WHEN kind = 'ACTIVEPAY' THEN 'https://qr.example/' || order_id END,
               CASE WHEN paid_by IS NOT NULL THEN received END, paid_by,
               CASE WHEN paid_by IS NOT NULL THEN paid_at END,
               CASE WHEN b IN (86, 87) THEN created_at + interval '15 minutes' END, 1, created_at, created_at
        FROM gen
        """,
    ),
    (
        "paid",
        # Every payment the gateway reports: our paid orders and the orphans (order ids we never created).
        """
        CREATE TEMP TABLE paid AS
        SELECT i, b, merchant_id, order_id, received, tip, chan, paid_at, paid_by FROM gen WHERE paid_by IS NOT NULL
        UNION ALL
        SELECT j, -1, 'BENCH0000' || (j % 5), 'ORPH' || lpad(j::text, 16, '0'), 100 + (j * 131) % 9900, 0,
               'AL9' || lpad(j::text, 15, '0'),
               timestamptz '2024-05-01 00:00:00 America/Toronto'
                   + make_interval(secs => j * 2592000.0 / ($1 / 500 + 1)),
               'callback'
        FROM generate_series(1, $1::int / 500) AS j
        """,
    ),
    (
        "callbacks",
        # Verified callbacks as the worker records them (a second channel payment for duplicates).
        """
        INSERT INTO callbacks (merchant_id, md5, order_id, rsp_code, envelope, data, signkey_index, received_at)
        SELECT merchant_id, digest, order_id, 'SUCCESS',
               jsonb_build_object('rsp_code', 'SUCCESS', 'rsp_msg', 'success', 'merchant_id', merchant_id,
                   'md5', digest,
                   'data', translate(encode(sha512(convert_to(digest, 'UTF8')) || sha512(convert_to(order_id, 'UTF8'))
                                            || sha256(convert_to(chan_n, 'UTF8')), 'base64'), E'\n', '')),
               jsonb_build_object('amount', received::text, 'tip', tip::text, 'bizpay_order_id', chan_n,
                   'merchant_id', merchant_id, 'order_id', order_id,
                   'finish_time', to_char(paid_at AT TIME ZONE 'America/Toronto', 'YYYYMMDDHH24MISS')),
               0, paid_at + make_interval(secs => 2 + n)
        FROM (
            SELECT p.*, n, upper(md5(order_id || '/' || n)) AS digest,
                   CASE n WHEN 1 THEN chan ELSE chan || 'D' END AS chan_n
            FROM paid p CROSS JOIN LATERAL generate_series(1, CASE WHEN b = 68 THEN 2 ELSE 1 END) AS n
            WHERE paid_by = 'callback'
        ) c
        """,
    ),
    (
        "payments",
        # One payment per order: the first callback's, or the PASSIVEPAY response's / status query's.
        """
        INSERT INTO payments (
            merchant_id, order_id, status, amount, tip, bizpay_order_id, finish_time_raw, finish_time, source,
            callback_id, created_at, updated_at
        )
        SELECT p.merchant_id, p.order_id, CASE WHEN p.b = 69 THEN 'partially_refunded' ELSE 'paid' END,
               p.received, p.tip, p.chan, to_char(p.paid_at AT TIME ZONE 'America/Toronto', 'YYYYMMDDHH24MISS'),
               CASE WHEN p.paid_by = 'callback' THEN p.paid_at END, p.paid_by, c.id, p.paid_at, p.paid_at
        FROM paid p
        LEFT JOIN callbacks c ON c.merchant_id = p.merchant_id AND c.md5 = upper(md5(p.order_id || '/1'))
        """,
    ),
    (
        "attempts",
        # What the submission worker sent: one request per order, plus the status query that proved b = 85.
        """
        INSERT INTO submission_attempts (order_ref, action, outcome, rsp_code, sent, gateway_status, started_at,
                                         latency_ms, data)
        SELECT o.id, o.kind,
               CASE o.status WHEN 'failed' THEN 'permanent' WHEN 'declined' THEN 'declined' ELSE 'success' END,
               CASE o.status WHEN 'failed' THEN 'FAIL' ELSE 'SUCCESS' END, true, NULL, o.created_at, 40 + o.id % 200,
               CASE WHEN o.kind = 'PASSIVEPAY' AND g.paid_by IS NOT NULL
                        THEN jsonb_build_object('bizpay_order_id', g.chan, 'order_status', 'SUCCESS',
                                                'amount', g.received::text)
                    WHEN o.kind = 'ACTIVEPAY' THEN jsonb_build_object('code_url', o.code_url) END
        FROM orders o JOIN gen g USING (merchant_id, order_id)
        UNION ALL
        SELECT o.id, 'STATUS_QUERY', 'success', 'SUCCESS', true, 'SUCCESS', g.paid_at, 80,
               jsonb_build_object('bizpay_order_id', g.chan, 'order_status', 'SUCCESS', 'amount', g.received::text)
        FROM orders o JOIN gen g USING (merchant_id, order_id) WHERE g.b = 85
        """,
    ),
    (
        "refunds",
        # Half of every b = 69 order refunded, and the refund confirmed.
        """
        INSERT INTO refunds (order_ref, merchant_id, refund_order_id, amount, idempotency_key, request_sha256, status,
                             created_at, updated_at)
        SELECT o.id, o.merchant_id, 'R' || substr(o.order_id, 2), o.amount / 2, 'refund-' || g.i,
               md5(o.order_id || 'r'), 'succeeded', g.paid_at + interval '1 day', g.paid_at + interval '1 day'
        FROM orders o JOIN gen g USING (merchant_id, order_id) WHERE g.b = 69
        """,
    ),
    (
        "statement",
        # One settlement statement for May covering the five merchants.
        """
        INSERT INTO statement_imports (file_name, file_sha256, period_start, period_end, merchant_ids, line_count)
        SELECT 'may.csv', md5('may' || $1::int), date '2024-05-01', date '2024-05-31',
               ARRAY(SELECT 'BENCH0000' || m FROM generate_series(0, 4) AS m), 0
        """,
    ),
    (
        "statement lines",
        # Its lines: the paid orders (a few left out or off by a cent) and some we never heard of.
        """
        INSERT INTO statement_lines (import_id, line_no, merchant_id, order_id, bizpay_order_id, amount, tip, fee,
                                     refund, txn_time_raw, txn_time, business_date, line_sha256)
        SELECT (SELECT max(id) FROM statement_imports), 1 + row_number() OVER (), merchant_id, order_id, chan,
               amount, tip, (amount + tip) * 2 / 100, refund,
               to_char(paid_at AT TIME ZONE 'America/Toronto', 'YYYY-MM-DD HH24:MI:SS'), paid_at,
               (paid_at AT TIME ZONE 'America/Toronto')::date,
               encode(sha256(convert_to(
                   concat_ws('|', merchant_id, order_id, chan, amount, tip, refund, paid_at), 'UTF8')), 'hex')
        FROM (
            SELECT merchant_id, order_id, chan, received + CASE WHEN i % 333 = 0 THEN 1 ELSE 0 END AS amount, tip,
                   CASE WHEN b = 69 THEN received / 2 ELSE 0 END AS refund, paid_at
            FROM paid WHERE i % 250 <> 0
            UNION ALL
            SELECT 'BENCH0000' || (k % 5), 'XTRA' || lpad(k::text, 16, '0'), 'WX8' || lpad(k::text, 15, '0'),
                   500 + k % 1000, 0, 0,
                   timestamptz '2024-05-01 12:00:00 America/Toronto' + make_interval(days => k % 30)
            FROM generate_series(1, $1::int / 1000) AS k
        ) lines
        """,
    ),
)
# Standing in for autovacuum when the server has it off (as the shared development server does): without
# it recon_dirty keeps every deleted key and the planner never learns that ledger and alerts grew.
MAINTAIN = ("VACUUM (ANALYZE) recon_dirty", "ANALYZE ledger", "ANALYZE alerts")
# The settings the numbers depend on.
SERVER_SETTINGS = "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1) ORDER BY name"
_SHOWN_SETTINGS = ["autovacuum", "shared_buffers", "work_mem", "max_parallel_workers_per_gather", "jit"]


@dataclass(frozen=True)
class Export:
    """One report exported by a fresh child process to /dev/null."""

    rows: int
    export_s: float  # inside the child: export_report alone
    process_s: float  # the whole child, interpreter start-up included
    peak_rss_mb: float  # the child's high-water resident set (getrusage of the reaped child)


@dataclass
class SizeResult:
    """Everything measured for one N."""

    orders: int
    generate_s: dict[str, float] = field(default_factory=dict)
    keys: int = 0
    reconcile_s: float = 0.0
    tick_rates: list[float] = field(default_factory=list)  # keys/s of each worker tick (MAX_BATCHES_PER_TICK)
    maintenance_s: float = 0.0  # VACUUM/ANALYZE between ticks, excluded from reconcile_s
    ledger_rows: int = 0
    exports: dict[str, Export] = field(default_factory=dict)

    @property
    def generate_total_s(self) -> float:
        """Evidence generation, all steps."""
        return sum(self.generate_s.values())


def run(sizes: Sequence[int], admin_url: str, maintenance: str) -> tuple[list[SizeResult], dict[str, str]]:
    """Measure every size in its own database; all of them are dropped on the way out, whatever happens."""
    results = []
    with ThrowawayDatabases(admin_url) as databases:
        settings = asyncio.run(_server_settings(databases.template_url))
        maintain = maintenance == "always" or (maintenance == "auto" and settings["autovacuum"] == "off")
        baseline = _export_in_child(databases.template_url, "ledger", merchant_id="NOBODY")
        results.append(SizeResult(0, exports={"baseline": baseline}))
        for size in sizes:
            url = databases.clone(f"n{size}")
            result = SizeResult(size)
            asyncio.run(_generate(url, size, result, maintain))
            _progress(f"N={size:,}: generated in {result.generate_total_s:.1f} s; reconciling")
            asyncio.run(_reconcile(url, result, maintain))
            _progress(f"N={size:,}: {result.keys:,} keys in {result.reconcile_s:.1f} s; exporting")
            for what in EXPORTS:
                result.exports[what] = _export_in_child(url, what)
            results.append(result)
    return results, settings


async def _server_settings(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(SERVER_SETTINGS, _SHOWN_SETTINGS)
    finally:
        await conn.close()
    return {r["name"]: r["value"] for r in rows}


async def _generate(url: str, size: int, result: SizeResult, maintain: bool) -> None:
    conn = await asyncpg.connect(url)
    try:
        for label, sql in GENERATE:
            started = time.perf_counter()
            await conn.execute(sql, *([size] if "$1" in sql else []))
            result.generate_s[label] = time.perf_counter() - started
        if maintain:
            started = time.perf_counter()
            await conn.execute("VACUUM ANALYZE")
            result.generate_s["vacuum analyze"] = time.perf_counter() - started
    finally:
        await conn.close()


async def _reconcile(url: str, result: SizeResult, maintain: bool) -> None:
    """Drain recon_dirty tick by tick, as the worker's scheduled job does."""
    # Maintenance gets its own connection: the pool's one connection is the reconciler's, as in a worker tick.
    admin = await asyncpg.connect(url)
    try:
        async with asyncpg.create_pool(url, min_size=1, max_size=1) as pool:
            await _drain(pool, admin, result, maintain)
        result.ledger_rows = await admin.fetchval("SELECT count(*) FROM ledger")
    finally:
        await admin.close()


async def _drain(pool: asyncpg.Pool, admin: asyncpg.Connection, result: SizeResult, maintain: bool) -> None:
    while True:
        started = time.perf_counter()
        report = await reconcile_pending(pool, business_tz=BUSINESS_TZ, max_batches=MAX_BATCHES_PER_TICK)
        elapsed = time.perf_counter() - started
        if not report.keys:
            return
        result.keys += report.keys
        result.reconcile_s += elapsed
        result.tick_rates.append(report.keys / elapsed)
        if maintain:
            started = time.perf_counter()
            for statement in MAINTAIN:
                await admin.execute(statement)
            result.maintenance_s += time.perf_counter() - started


def _export_in_child(url: str, what: str, merchant_id: str | None = None) -> Export:
    """Run one export in a fresh interpreter so its peak RSS is the export's alone (os.wait4's rusage)."""
    argv = [sys.executable, "-m", "bench.reconcile", "--child-export", what]
    if merchant_id is not None:
        argv += ["--merchant", merchant_id]
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=child_env({"DATABASE_URL": url}), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    process_s = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"export {what} exited with status {proc.returncode}")
    measured = json.loads(output)
    # ru_maxrss is in KiB on Linux.
    return Export(measured["rows"], measured["seconds"], process_s, usage.ru_maxrss / 1024)


def child_export(what: str, merchant_id: str | None) -> int:
    """The child side of _export_in_child: export to /dev/null, print rows and seconds as JSON."""

    async def export(out: TextIO) -> int:
        async with asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=1) as pool:
            return await export_report(pool, what, out, merchant_id=merchant_id)

    started = time.perf_counter()
    with open(os.devnull, "w", encoding="utf-8") as out:
        rows = asyncio.run(export(out))
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started}))
    return 0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary(results: Sequence[SizeResult], settings: dict[str, str], maintained: bool) -> str:
    """The measurement table, the per-100k growth table and the conditions."""
    baseline = results[0].exports["baseline"]
    measured = [r for r in results if r.orders]
    rows = []
    for r in measured:
        ticks = r.tick_rates
        rows.append(
            [
                f"{r.orders:,}",
                f"{r.keys:,}",
                f"{r.generate_total_s:.1f}",
                f"{r.reconcile_s:.1f}",
                f"{r.keys / r.reconcile_s:,.0f}",
                f"{ticks[0]:,.0f} / {ticks[-1]:,.0f}",
                *(f"{r.exports[w].export_s:.1f} ({r.exports[w].peak_rss_mb:.0f} MB)" for w in EXPORTS),
            ]
        )
    header = ["orders", "keys", "generate s", "reconcile s", "keys/s", "1st/last tick keys/s"]
    header += [f"{w} s (peak RSS)" for w in EXPORTS]
    lines = [table(header, rows)]
    first, last = measured[0], measured[-1]
    if len(measured) > 1:
        growth = []
        steps = [("generate", first.generate_total_s, last.generate_total_s)]
        steps.append(("reconcile", first.reconcile_s, last.reconcile_s))
        steps += [(f"export {w}", first.exports[w].export_s, last.exports[w].export_s) for w in EXPORTS]
        for label, at_first, at_last in steps:
            small, large = 1e5 * at_first / first.orders, 1e5 * at_last / last.orders
            growth.append([label, f"{small:.2f}", f"{large:.2f}", f"x{large / small:.2f}"])
        lines += [
            "",
            f"seconds per 100k orders, {first.orders:,} -> {last.orders:,} (x1.00 = linear):",
            table(["step", f"at {first.orders:,}", f"at {last.orders:,}", "ratio"], growth),
        ]
    lines += [
        "",
        f"export peak RSS of a child exporting nothing (interpreter + asyncpg): {baseline.peak_rss_mb:.0f} MB",
        "server: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
    ]
    if maintained:
        spent = ", ".join(f"{r.maintenance_s:.1f} s" for r in measured)
        lines.append(
            f"autovacuum is off on this server: VACUUM/ANALYZE ran after generation and between reconcile ticks "
            f"in its place ({spent}), not counted in reconcile s"
        )
    return "\n".join(lines)


def parse_sizes(text: str) -> list[int]:
    """--sizes: comma-separated order counts, e.g. 100000,300000,1000000."""
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1000:
        raise argparse.ArgumentTypeError("give at least one size, each >= 1000")
    return sorted(sizes)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.reconcile`: run, print the tables; exit 1 when it could not run."""
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__)
    parser.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES), help="orders per run")
    parser.add_argument(
        "--maintenance",
        choices=["auto", "always", "never"],
        default="auto",
        help="VACUUM/ANALYZE between reconcile ticks: auto = only when the server's autovacuum is off",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--child-export", choices=EXPORTS, help=argparse.SUPPRESS)
    parser.add_argument("--merchant", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_export:
        return child_export(args.child_export, args.merchant)
    stop_on_sigterm()
    env = dict(os.environ)
    try:
        admin_url = server_url("DATABASE_URL", env)
        print(facts_text(machine_facts(None, admin_url)) + "\n", flush=True)
        results, settings = run(args.sizes, admin_url, args.maintenance)
    except BenchError as exc:
        print(f"bench.reconcile: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.reconcile: interrupted; every database it created was dropped", file=sys.stderr)
        return 130
    maintained = args.maintenance == "always" or (args.maintenance == "auto" and settings["autovacuum"] == "off")
    print(summary(results, settings, maintained))
    if args.json is not None:
        dump_json(args.json, {"settings": settings, "results": [asdict(r) for r in results]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
