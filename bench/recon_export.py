"""One report exported by a fresh child process to /dev/null: its time and its own peak memory.

`python -m bench.recon_export WHAT [--merchant ID]` is the child (DATABASE_URL in its environment); it prints
rows, seconds and peak RSS as JSON. bench/reconcile.py runs it once per export and size, so each peak is the
export's alone, not the benchmark's (issue 13's "memory flat" target).
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
from datetime import date
from typing import TextIO

import asyncpg

from bench.errors import BenchError
from bench.recon_report import EXPORTS, LEDGER_BEFORE
from bench.recon_results import Export
from bench.support import REPO_ROOT, child_env
from ottrecon.reconciliation.csv_writer import write_csv
from ottrecon.reconciliation.reports import EXPORT_LEDGER, LEDGER_COLUMNS, export_report


def export_in_child(url: str, what: str, merchant_id: str | None = None) -> Export:
    """Run one export in a fresh interpreter so its peak RSS is the export's alone (the child reads its own)."""
    argv = [sys.executable, "-m", "bench.recon_export", what]
    if merchant_id is not None:
        argv += ["--merchant", merchant_id]
    started = time.perf_counter()
    # The context closes the pipe and waits for the child, also when reading fails.
    with subprocess.Popen(
        argv, cwd=REPO_ROOT, env=child_env({"DATABASE_URL": url}), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        output = proc.stdout.read()
        proc.wait()
    process_s = time.perf_counter() - started
    if proc.returncode != 0:
        raise BenchError(f"export {what} exited with status {proc.returncode}")
    measured = json.loads(output)
    return Export(measured["rows"], measured["seconds"], process_s, measured["peak_rss_kb"] / 1024)


def child_export(what: str, merchant_id: str | None) -> int:
    """The child side of export_in_child: export to /dev/null, print rows, seconds and peak RSS as JSON."""

    async def export(out: TextIO) -> int:
        async with asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=1) as pool:
            if what == LEDGER_BEFORE:
                args = (date.min, date.max, merchant_id)
                return await write_csv(pool, out, LEDGER_COLUMNS, EXPORT_LEDGER, args, 5000)
            return await export_report(pool, what, out, merchant_id=merchant_id)

    started = time.perf_counter()
    with open(os.devnull, "w", encoding="utf-8") as out:
        rows = asyncio.run(export(out))
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_kb": own_peak_rss_kb()}))
    return 0


def own_peak_rss_kb() -> int:
    """This process's high-water resident set in KiB: VmHWM of its own address space.

    Not getrusage: Linux carries a parent's high-water mark across fork and exec into the child's
    ru_maxrss (and into the parent's wait4 rusage of it), so an export child reported the benchmark's
    own peak (116 MB, then 198 MB with more receiver bodies), whatever the export used.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise BenchError("no VmHWM in /proc/self/status: peak memory is measured on Linux only")


def main(argv: Sequence[str] | None = None) -> int:
    """The child: export one report to /dev/null, print what it measured."""
    parser = argparse.ArgumentParser(prog="python -m bench.recon_export", description=__doc__)
    parser.add_argument("what", choices=(*EXPORTS, LEDGER_BEFORE))
    parser.add_argument("--merchant", help="export only this merchant's rows")
    args = parser.parse_args(argv)
    return child_export(args.what, args.merchant)


if __name__ == "__main__":
    raise SystemExit(main())
