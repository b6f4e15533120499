"""The reconciliation benchmark's tables: what bench/reconcile.py measured, against issue 13's targets."""

from __future__ import annotations

from collections.abc import Sequence

from bench.recon_results import SizeResult
from bench.report import Target
from bench.support import table

# The exports measured, each in its own child process writing to /dev/null; "ledger-cursor" is the ledger
# as it was exported before issue 13 (write_csv: a server-side cursor, each row rendered by csv.writer).
EXPORTS = ("ledger", "summary", "mismatches")
LEDGER_BEFORE = "ledger-cursor"
# The ledger exported again once every date is closed (bench.recon_generate.CLOSE_EVERY_DATE): context, not a target.
LEDGER_CLOSED = "ledger-closed"
# Issue 13's targets, for 1M orders; a smaller largest size is held to its share (N / 1M of the seconds).
TARGET_RECONCILE_S_PER_M = 60.0
TARGET_EXPORT_S_PER_M = 10.0
TARGET_GROWTH = 1.10  # seconds per 100k at the largest size / at the smallest: flat, within noise
TARGET_RSS_GROWTH_MB = 5.0


def summary(results: Sequence[SizeResult], settings: dict[str, str], maintained: bool) -> str:
    """The measurement table, the baseline beside it, the per-100k growth table and the conditions."""
    nothing = results[0].exports["baseline"]
    measured = [r for r in results if r.orders]
    rows = []
    for r in measured:
        for label, run in (("now", r), ("before", r.baseline)):
            if run is None:
                continue
            ticks = run.tick_rates
            exports = [f"{r.exports[w].export_s:.1f} ({r.exports[w].peak_rss_mb:.0f} MB)" for w in EXPORTS]
            if label == "before":
                before = r.exports.get(LEDGER_BEFORE)
                exports = [f"{before.export_s:.1f} ({before.peak_rss_mb:.0f} MB)" if before else "-", "", ""]
            rows.append(
                [
                    f"{r.orders:,}",
                    f"{label} ({run.concurrency} conn)",
                    f"{run.keys:,}",
                    f"{r.generate_total_s:.1f}" if label == "now" else "",
                    f"{run.reconcile_s:.1f}",
                    f"{run.keys / run.reconcile_s:,.0f}",
                    f"{ticks[0]:,.0f} / {ticks[-1]:,.0f}",
                    *exports,
                ]
            )
    header = ["orders", "code", "keys", "generate s", "reconcile s", "keys/s", "1st/last tick keys/s"]
    header += [f"{w} s (peak RSS)" for w in EXPORTS]
    lines = [table(header, rows)]
    first, last = measured[0], measured[-1]
    if len(measured) > 1:
        growth = []
        steps = [("generate", first.generate_total_s, last.generate_total_s)]
        steps.append(("reconcile", first.reconcile_s, last.reconcile_s))
        if first.baseline and last.baseline:
            steps.append(("reconcile, before", first.baseline.reconcile_s, last.baseline.reconcile_s))
        steps += [(f"export {w}", first.exports[w].export_s, last.exports[w].export_s) for w in EXPORTS]
        if LEDGER_CLOSED in first.exports and LEDGER_CLOSED in last.exports:
            at = first.exports[LEDGER_CLOSED].export_s, last.exports[LEDGER_CLOSED].export_s
            steps.append(("export ledger, every date closed", *at))
        if LEDGER_BEFORE in first.exports and LEDGER_BEFORE in last.exports:
            at = first.exports[LEDGER_BEFORE].export_s, last.exports[LEDGER_BEFORE].export_s
            steps.append(("export ledger, before", *at))
        for label, at_first, at_last in steps:
            small, large = 1e5 * at_first / first.orders, 1e5 * at_last / last.orders
            growth.append([label, f"{small:.2f}", f"{large:.2f}", f"x{large / small:.2f}"])
        lines += [
            "",
            f"seconds per 100k orders, {first.orders:,} -> {last.orders:,} (x1.00 = linear):",
            table(["step", f"at {first.orders:,}", f"at {last.orders:,}", "ratio"], growth),
        ]
    for r in measured:
        closed = r.exports.get(LEDGER_CLOSED)
        if closed is not None:
            plain = r.exports["ledger"]
            lines.append(
                f"N={r.orders:,} export ledger with every date closed (a close entry per row): "
                f"{closed.export_s:.1f} s ({closed.peak_rss_mb:.0f} MB), "
                f"x{closed.export_s / plain.export_s:.2f} the open books' {plain.export_s:.1f} s"
            )
    for r in measured:
        if len(r.runs_s) > 1:
            each = ", ".join(f"{s:.1f}" for s in r.runs_s)
            lines.append(
                f"N={r.orders:,} reconciled {len(r.runs_s)} times on fresh clones: {each} s; the median is shown"
            )
    lines += [
        "",
        f"export peak RSS of a child exporting nothing (interpreter + asyncpg): {nothing.peak_rss_mb:.0f} MB",
        "server: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
    ]
    if maintained:
        spent = ", ".join(f"{r.maintenance_s:.1f} s" for r in measured)
        lines.append(
            f"autovacuum is off on this server: VACUUM/ANALYZE ran after generation and between reconcile ticks "
            f"in its place ({spent}), not counted in reconcile s"
        )
    return "\n".join(lines)


def targets(results: Sequence[SizeResult]) -> list[Target]:
    """Issue 13's targets on the largest size (scaled to it when it is not 1M), growth from the smallest."""
    measured = [r for r in results if r.orders]
    first, last = measured[0], measured[-1]
    share = last.orders / 1_000_000
    rows: list[Target] = []
    seconds, goal = last.reconcile_s, TARGET_RECONCILE_S_PER_M * share
    old = last.baseline
    before = f" (before: {old.reconcile_s:.1f} s, x{old.reconcile_s / seconds:.2f})" if old else ""
    rows.append(
        (
            f"reconcile {last.orders:,} changed orders",
            f"{seconds:.1f} s{before}",
            f"< {goal:.1f} s",
            seconds < goal,
        )
    )
    ledger = last.exports["ledger"]
    cursor = last.exports.get(LEDGER_BEFORE)
    goal = TARGET_EXPORT_S_PER_M * share
    rows.append(
        (
            f"export ledger, {last.orders:,} orders",
            f"{ledger.export_s:.1f} s" + (f" (before: {cursor.export_s:.1f} s)" if cursor else ""),
            f"< {goal:.1f} s",
            ledger.export_s < goal,
        )
    )
    if len(measured) > 1:
        growth = (last.reconcile_s / last.orders) / (first.reconcile_s / first.orders)
        rows.append(
            (
                f"reconcile s per 100k, {first.orders:,} -> {last.orders:,}",
                f"x{growth:.2f}",
                f"<= x{TARGET_GROWTH:.2f}",
                growth <= TARGET_GROWTH,
            )
        )
        small, large = first.exports["ledger"].peak_rss_mb, last.exports["ledger"].peak_rss_mb
        rows.append(
            (
                f"export ledger peak RSS, {first.orders:,} / {last.orders:,}",
                f"{small:.0f} / {large:.0f} MB",
                f"+ <= {TARGET_RSS_GROWTH_MB:.0f} MB",
                large - small <= TARGET_RSS_GROWTH_MB,
            )
        )
    return rows
