"""The ledger export's booked cells: book_entries read once per row (now) against twice (before), in one run.

`python -m bench.export_booked [--orders 200000] [--rounds 3]`. Generates N orders of evidence in a throwaway
database (bench.recon_generate), reconciles it, VACUUMs it, then takes turns exporting the ledger through the
service's COPY path (csv_writer.copy_csv) to nothing: the current EXPORT_LEDGER_CSV and the statement before
(bench/baseline/), first with open books, then with every date closed (CLOSE_EVERY_DATE: a close entry per row).
Every round checks both wrote the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import asyncpg

from bench.databases import ThrowawayDatabases
from bench.errors import BenchError
from bench.recon_generate import close_every_date, generate
from bench.report import table
from bench.support import positive_int, server_url
from ottrecon.reconciliation.csv_writer import copy_csv
from ottrecon.reconciliation.reconcile import reconcile_pending
from ottrecon.reconciliation.reports import EXPORT_LEDGER_CSV, LEDGER_EXPORT_COLUMNS

BEFORE = (Path(__file__).parent / "baseline" / "export_ledger_csv_before_one_probe.sql").read_text("utf-8")
EVERYTHING = (date.min, date.max, None)


class _Digest(io.StringIO):
    """An export's output, hashed, never kept."""

    def __init__(self) -> None:
        super().__init__()
        self.sha = hashlib.sha256()

    def write(self, text: str) -> int:
        self.sha.update(text.encode("utf-8"))
        return len(text)


async def _export(pool: asyncpg.Pool, sql: str) -> tuple[float, str]:
    """One ledger export through the service's COPY path (copy_csv), timed; its digest."""
    sink = _Digest()
    started = time.perf_counter()
    await copy_csv(pool, sink, LEDGER_EXPORT_COLUMNS, sql, EVERYTHING)
    return time.perf_counter() - started, sink.sha.hexdigest()


async def _prepare(url: str, orders: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await generate(conn, orders)
    finally:
        await conn.close()
    async with asyncpg.create_pool(url, min_size=2, max_size=2) as pool:
        await reconcile_pending(pool, business_tz="America/Toronto", concurrency=2)


async def _measure(url: str, rounds: int) -> dict[str, list[float]]:
    """Seconds per (books, code), rounds taking turns (which code goes first alternates)."""
    times: dict[str, list[float]] = {}
    async with asyncpg.create_pool(url, min_size=1, max_size=1) as pool:
        for books in ("open", "closed"):
            async with pool.acquire() as conn:
                if books == "closed":
                    await close_every_date(conn)
                await conn.execute("VACUUM ANALYZE")  # hint bits set once, before any timed read
            for n in range(rounds):
                order = [("before", BEFORE), ("now", EXPORT_LEDGER_CSV)]
                digests = set()
                for code, sql in order if n % 2 == 0 else order[::-1]:
                    seconds, digest = await _export(pool, sql)
                    times.setdefault(f"{books} books, {code}", []).append(seconds)
                    digests.add(digest)
                    print(f"  {books} books, round {n + 1}, {code}: {seconds:.2f} s", file=sys.stderr, flush=True)
                if len(digests) != 1:
                    raise BenchError(f"{books} books, round {n + 1}: the two statements wrote different bytes")
    return times


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the table; exit 1 when it could not run."""
    parser = argparse.ArgumentParser(prog="python -m bench.export_booked", description=__doc__)
    parser.add_argument("--orders", type=positive_int, default=200_000, help="orders of generated evidence")
    parser.add_argument("--rounds", type=positive_int, default=3, help="turns of before/now per state of the books")
    args = parser.parse_args(argv)
    try:
        with ThrowawayDatabases(server_url("DATABASE_URL")) as databases:
            url = databases.clone("export_booked")
            asyncio.run(_prepare(url, args.orders))
            times = asyncio.run(_measure(url, args.rounds))
    except BenchError as exc:
        print(f"bench.export_booked: {exc}", file=sys.stderr)
        return 1
    rows = []
    for books in ("open", "closed"):
        before, now = times[f"{books} books, before"], times[f"{books} books, now"]
        ratios = [n / b for b, n in zip(before, now, strict=True)]
        rows.append(
            [
                books,
                ", ".join(f"{s:.2f}" for s in before),
                ", ".join(f"{s:.2f}" for s in now),
                f"x{statistics.median(ratios):.2f}",
            ]
        )
    print(f"ledger export of {args.orders:,} orders (COPY to nothing), {args.rounds} turns; same bytes every turn")
    print(table(["books", "before s (two probes)", "now s (one probe)", "median now/before"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
