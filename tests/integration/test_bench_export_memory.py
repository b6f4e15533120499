"""The benchmark's export memory is the export's own, not its parent's (issue 13's "memory flat" target).

Linux carries a process's high-water resident set across fork and exec into the child's rusage, so
`wait4`'s ru_maxrss of an export child read the benchmark parent's peak: 116 MB while the parent held
100,000 receiver bodies, 198 MB with 250,000, whatever the export did. The target compared two copies
of that floor and could not fail. The child now reports its own peak (VmHWM of its own address space).
"""

from __future__ import annotations

import asyncpg

from bench.recon_export import export_in_child

# Far above what an interpreter exporting nothing needs (about 60 MB here).
PARENT_MB = 600


async def test_an_export_childs_peak_is_its_own_not_its_parents(database_url: str, db: asyncpg.Connection) -> None:
    ballast = bytearray(b"\x01") * (PARENT_MB * 1024 * 1024)  # written, so resident
    try:
        export = export_in_child(database_url, "ledger", merchant_id="NOBODY")
    finally:
        del ballast
    assert export.rows == 0
    assert 10 < export.peak_rss_mb < PARENT_MB / 2, f"{export.peak_rss_mb:.0f} MB: the parent's peak, not the child's"
