"""`make bench`'s summary judges every issue-13 target it measured, the 2+2 one included (it was left to hand sums)."""

from __future__ import annotations

from dataclasses import replace

from bench.receiver import Measurement, ReceiverOptions, ReceiverReport
from bench.recon_report import EXPORTS, summary, targets
from bench.recon_results import Export, SizeResult
from bench.reconcile import median_run
from bench.run_all import summary_rows
from bench.scaleout import ScaleOutOptions, ScaleOutReport
from bench.wrk import WrkResult


def wrk(requests: int, duration_s: float = 10.0) -> WrkResult:
    return WrkResult(requests, duration_s, 0, 0, 2.0, 3.0, 5.0, 9.0, requests, 0, 1.0)


def receiver_report(*bare_rps: int) -> ReceiverReport:
    report = ReceiverReport(ReceiverOptions())
    for rps in bare_rps:
        report.measurements.append(Measurement("bare", wrk(rps * 10), 100.0))
        report.measurements.append(Measurement("receiver", wrk(rps * 7), 100.0))
    return report


def scale_report(recorded: int, load_s: float, drain_s: float) -> ScaleOutReport:
    half = recorded // 2
    loads = [wrk(half, load_s), wrk(recorded - half, load_s)]
    return ScaleOutReport(ScaleOutOptions(), loads, recorded, drain_after_load_s=drain_s)


def together_row(rows: list[list[str]]) -> list[str]:
    [row] = [row for row in rows if row[0].startswith("2+2 recorded end to end")]
    return row


def test_the_two_by_two_rate_is_judged_against_the_median_bare_rate() -> None:
    # 60,000 recorded over 10 s of load + 2 s of drain = 5,000/s; bare's median of 18k, 20k, 30k is 20,000.
    row = together_row(summary_rows(receiver_report(18_000, 20_000, 30_000), None, scale_report(60_000, 10.0, 2.0)))
    assert row == ["2+2 recorded end to end / bare aiohttp", "25.0% (5,000 vs 20,000/s)", ">= 25%", "yes"]


def test_a_slower_two_by_two_misses() -> None:
    row = together_row(summary_rows(receiver_report(20_000), None, scale_report(59_000, 10.0, 2.0)))
    assert row[1:] == ["24.6% (4,917 vs 20,000/s)", ">= 25%", "NO"]


def test_without_the_receiver_run_there_is_no_baseline_and_no_row() -> None:
    rows = summary_rows(None, None, scale_report(60_000, 10.0, 2.0))
    assert not [row for row in rows if row[0].startswith("2+2 recorded")]


def test_the_smallest_reconcile_size_is_judged_on_its_median_run_and_every_run_is_shown() -> None:
    runs = [
        SizeResult(100_000, reconcile_s=s, keys=100_300, tick_rates=[30_000.0], generate_s={"all": 22.0})
        for s in (3.6, 2.8, 3.2)
    ]
    chosen = median_run(runs)
    assert chosen.reconcile_s == 3.2
    assert median_run(runs[:2]).reconcile_s == 3.6  # an even count takes the upper median: never the fastest
    small = replace(chosen, runs_s=[r.reconcile_s for r in runs])
    large = SizeResult(1_000_000, reconcile_s=35.2, keys=1_003_000, tick_rates=[28_000.0], generate_s={"all": 260.0})
    for result in (small, large):
        result.exports.update({w: Export(1, 1.0, 1.5, 45.0) for w in EXPORTS})
    growth = next(row for row in targets([small, large]) if row[0].startswith("reconcile s per 100k"))
    assert growth[1] == "x1.10"  # 35.2 / 10 / 3.2, from the median run, not the fastest (x1.26) or the slowest
    nothing = SizeResult(0, exports={"baseline": Export(0, 0.1, 0.5, 44.0)})  # a run's first entry (bench.reconcile)
    shown = summary([nothing, small, large], {}, maintained=False)
    assert "reconciled 3 times on fresh clones: 3.6, 2.8, 3.2 s" in shown
