"""Reconciliation and report export at scale: generate N orders of evidence, reconcile, export, check linearity.

`python -m bench.reconcile [--sizes 100000,1000000] [--no-baseline]`. Each size's evidence is generated once
in a throwaway database (migrated by the real runner, dropped at the end even on failure or Ctrl-C); the
current reconciler and, as the baseline in the same run, the one before issue 13 (its ledger statement kept in
bench/baseline/) each drain a clone of it. The ledger export runs both ways too: COPY (current) and the
cursor with csv.writer (before). The current reconciler runs as a worker tick does, with
OTTRECON_RECONCILE_CONCURRENCY's default (--concurrency to change it); the baseline on one connection, as
it ran before issue 13. Targets (issue 13): 1M changed orders reconciled in < 60 s, seconds per
100k flat from the smallest size to the largest, ledger export of 1M rows < 10 s in flat memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import asyncpg

from bench.databases import ThrowawayDatabases
from bench.recon_export import export_in_child
from bench.recon_generate import close_every_date, generate
from bench.recon_report import EXPORTS, LEDGER_BEFORE, LEDGER_CLOSED, summary, targets
from bench.recon_results import SizeResult
from bench.report import targets_table
from bench.support import (
    BenchError,
    dump_json,
    facts_text,
    machine_facts,
    server_url,
    stop_on_sigterm,
)
from ottrecon.reconciliation import reconcile
from ottrecon.reconciliation.reconcile import reconcile_pending
from worker.recon_jobs import MAX_BATCHES_PER_TICK
from worker.settings import WorkerSettings

BUSINESS_TZ = "America/Toronto"
DEFAULT_SIZES = (100_000, 1_000_000)
# The smallest size (when there are several) is reconciled this many times, each on a fresh clone, and its median
# run judged: the per-100k growth divides by it, and one 3-7 s run moved by up to 25 % between runs on the same
# code (x0.92 to x1.19 growth, docs/BENCHMARKS.md), where the 1M run, ten times longer, moved by under 10 %.
SMALLEST_RUNS = 3
# The ledger statement before issue 13, the baseline's (the claim, locks, refunds and alerts are today's).
BASELINE_LEDGER_SQL = (Path(__file__).parent / "baseline" / "reconcile_ledger_before_13.sql").read_text("utf-8")

# Standing in for autovacuum when the server has it off (as the shared development server does): without
# it recon_dirty keeps every deleted key and the planner never learns that ledger and alerts grew.
MAINTAIN = ("VACUUM (ANALYZE) recon_dirty", "ANALYZE ledger", "ANALYZE alerts")
# The settings the numbers depend on.
SERVER_SETTINGS = "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY($1) ORDER BY name"
_SHOWN_SETTINGS = ["autovacuum", "shared_buffers", "work_mem", "max_parallel_workers_per_gather", "jit"]


def run(
    sizes: Sequence[int], admin_url: str, maintenance: str, baseline: bool = True, concurrency: int = 1
) -> tuple[list[SizeResult], dict[str, str]]:
    """Measure every size in its own databases; all of them are dropped on the way out, whatever happens."""
    results = []
    with ThrowawayDatabases(admin_url) as databases:
        settings = asyncio.run(_server_settings(databases.template_url))
        maintain = maintenance == "always" or (maintenance == "auto" and settings["autovacuum"] == "off")
        nothing = export_in_child(databases.template_url, "ledger", merchant_id="NOBODY")
        results.append(SizeResult(0, exports={"baseline": nothing}))
        for size in sizes:
            generated = databases.clone(f"n{size}")
            result = SizeResult(size)
            asyncio.run(_generate(generated, size, result, maintain))
            _progress(f"N={size:,}: generated in {result.generate_total_s:.1f} s")
            if baseline:
                # The baseline first, then ours, each on its own copy of the same evidence.
                result.baseline = SizeResult(size)
                url = databases.clone(f"n{size}_before", source=generated)
                with _ledger_statement(BASELINE_LEDGER_SQL):
                    asyncio.run(_reconcile(url, result.baseline, maintain, concurrency=1))
                _progress(f"N={size:,}, before: {result.baseline.keys:,} keys in {result.baseline.reconcile_s:.1f} s")
                databases.drop(url)
            runs: list[SizeResult] = []
            for attempt in range(SMALLEST_RUNS if size == sizes[0] and len(sizes) > 1 else 1):
                if runs:
                    databases.drop(url)
                url = databases.clone(f"n{size}_now{attempt}", source=generated)
                runs.append(SizeResult(size))
                asyncio.run(_reconcile(url, runs[-1], maintain, concurrency=concurrency))
                _progress(f"N={size:,}: {runs[-1].keys:,} keys in {runs[-1].reconcile_s:.1f} s")
            # The export reads the last clone: every run builds the same ledger.
            result = replace(
                median_run(runs),
                generate_s=result.generate_s,
                baseline=result.baseline,
                runs_s=[r.reconcile_s for r in runs],
            )
            _progress(f"N={size:,}: exporting")
            databases.drop(generated)
            for what in (*EXPORTS, LEDGER_BEFORE) if baseline else EXPORTS:
                result.exports[what] = export_in_child(url, what)
            asyncio.run(_close_every_date(url))
            result.exports[LEDGER_CLOSED] = export_in_child(url, "ledger")
            databases.drop(url)
            results.append(result)
    return results, settings


def median_run(runs: Sequence[SizeResult]) -> SizeResult:
    """The run of median reconcile time, which stands for its size (the upper median of an even count)."""
    if not runs:
        raise ValueError("no run to choose from")
    return sorted(runs, key=lambda r: r.reconcile_s)[len(runs) // 2]


@contextlib.contextmanager
def _ledger_statement(sql: str) -> Iterator[None]:
    """Run the reconciler with another ledger statement (the baseline's), everything else unchanged."""
    current = reconcile.RECONCILE_LEDGER
    reconcile.RECONCILE_LEDGER = sql
    try:
        yield
    finally:
        reconcile.RECONCILE_LEDGER = current


async def _server_settings(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(SERVER_SETTINGS, _SHOWN_SETTINGS)
    finally:
        await conn.close()
    return {r["name"]: r["value"] for r in rows}


async def _close_every_date(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await close_every_date(conn)
    finally:
        await conn.close()


async def _generate(url: str, size: int, result: SizeResult, maintain: bool) -> None:
    conn = await asyncpg.connect(url)
    try:
        result.generate_s.update(await generate(conn, size))
        if maintain:
            started = time.perf_counter()
            await conn.execute("VACUUM ANALYZE")
            result.generate_s["vacuum analyze"] = time.perf_counter() - started
    finally:
        await conn.close()


async def _reconcile(url: str, result: SizeResult, maintain: bool, *, concurrency: int) -> None:
    """Drain recon_dirty tick by tick, as the worker's scheduled job does."""
    # Maintenance gets its own connection: the pool's one connection is the reconciler's, as in a worker tick.
    result.concurrency = concurrency
    admin = await asyncpg.connect(url)
    try:
        async with asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency) as pool:
            await _drain(pool, admin, result, maintain, concurrency)
        result.ledger_rows = await admin.fetchval("SELECT count(*) FROM ledger")
    finally:
        await admin.close()


async def _drain(
    pool: asyncpg.Pool, admin: asyncpg.Connection, result: SizeResult, maintain: bool, concurrency: int
) -> None:
    while True:
        started = time.perf_counter()
        report = await reconcile_pending(
            pool, business_tz=BUSINESS_TZ, max_batches=MAX_BATCHES_PER_TICK, concurrency=concurrency
        )
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


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the code before issue 13 (its reconciler and its cursor ledger export)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=WorkerSettings.reconcile_concurrency,
        help="reconcile batches at once, each on its own connection (default: the worker's default)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    env = dict(os.environ)
    try:
        admin_url = server_url("DATABASE_URL", env)
        print(facts_text(machine_facts(None, admin_url)) + "\n", flush=True)
        results, settings = run(args.sizes, admin_url, args.maintenance, args.baseline, args.concurrency)
    except BenchError as exc:
        print(f"bench.reconcile: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench.reconcile: interrupted; every database it created was dropped", file=sys.stderr)
        return 130
    maintained = args.maintenance == "always" or (args.maintenance == "auto" and settings["autovacuum"] == "off")
    print(summary(results, settings, maintained) + "\n")
    print(targets_table(targets(results)))
    if args.json is not None:
        dump_json(args.json, {"settings": settings, "results": [asdict(r) for r in results]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
