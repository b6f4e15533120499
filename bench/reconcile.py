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
from bench.recon_generate import GENERATE
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
from ottrecon.reconciliation.reconcile import reconcile_pending
from ottrecon.reconciliation.reports import export_report
from worker.recon_jobs import MAX_BATCHES_PER_TICK

BUSINESS_TZ = "America/Toronto"
DEFAULT_SIZES = (100_000, 300_000, 1_000_000)
# The exports measured, each in its own child process writing to /dev/null.
EXPORTS = ("ledger", "summary", "mismatches")

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
