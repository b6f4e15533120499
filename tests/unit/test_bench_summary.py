"""`make bench`'s summary judges every issue-13 target it measured, the 2+2 one included (it was left to hand sums)."""

from __future__ import annotations

from bench.receiver import Measurement, ReceiverOptions, ReceiverReport
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
