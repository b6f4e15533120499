"""The progress reporter on a fake clock: what it draws, how often, its rate and time left, and the summary."""

from __future__ import annotations

import io
import itertools
import logging
import os
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ottrecon.progress import REDRAW_INTERVAL_S, Progress, format_duration, interactive_stream

DRAW = re.compile(r"\r([^\r]*?)\x1b\[K")
LINE = re.compile(r"job: ([\d,]+) / ([\d,]+) rows \((\d+)%\)(?:, ([\d,]+) rows/s(?:, (.+) left)?)?")


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Terminal(io.StringIO):
    """A stream that remembers when (on the fake clock) each write happened."""

    clock: Clock = field(default_factory=Clock)
    writes: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def write(self, text: str) -> int:
        self.writes.append((self.clock.now, text))
        return super().write(text)

    def drawn(self) -> list[tuple[float, str]]:
        """(time, text) of every progress line drawn (an erase alone is not a drawing)."""
        return [(at, m) for at, text in self.writes for m in DRAW.findall(text) if m]


def reporter(width: int = 200) -> tuple[Progress, Terminal, Clock]:
    clock = Clock()
    terminal = Terminal(clock)
    return Progress(terminal, "job", interactive=True, clock=clock, width=width), terminal, clock


def test_progress_without_a_terminal_writes_nothing_and_still_times_the_summary() -> None:
    clock = Clock()
    stream = io.StringIO()
    progress = Progress(stream, "job", interactive=False, clock=clock)
    progress.stage("counting")
    progress.stage(unit="rows", total=10)
    for _ in range(10):
        clock.now += 1
        progress.advance()

    assert progress.finish("exported 10 row(s)") == "exported 10 row(s) (took 10 s)"
    assert stream.getvalue() == ""
    assert progress.done == 10


def test_progress_line_shows_done_total_percent_rate_and_time_left() -> None:
    progress, terminal, clock = reporter()
    progress.stage(unit="rows", total=1000)
    for _ in range(50):  # 100 rows a second for 5 s
        clock.now += 0.1
        progress.advance(10)

    assert progress.line() == "job: 500 / 1,000 rows (50%), 100 rows/s, 5 s left"
    assert terminal.drawn()[0][1] == "job: 0 / 1,000 rows (0%)"  # the stage is drawn at once, before any rate


def test_progress_line_without_a_total_shows_done_and_rate_only() -> None:
    progress, _, clock = reporter()
    progress.stage("sending", unit="entries")
    clock.now += 2
    progress.advance(3000)

    assert progress.line() == "job: sending: 3,000 entries, 1,500 entries/s"


def test_progress_waiting_step_is_drawn_at_once() -> None:
    progress, terminal, _ = reporter()
    progress.stage("counting rows")

    assert terminal.drawn() == [(1000.0, "job: counting rows...")]


def test_progress_in_bytes_reads_as_sizes() -> None:
    progress, _, clock = reporter()
    progress.stage("checking may.csv", unit="bytes", total=3 << 20)
    clock.now += 1
    progress.advance(3 << 19)

    assert progress.line() == "job: checking may.csv: 1.5 MB / 3.0 MB (50%), 1.5 MB/s, 1 s left"


def test_progress_past_a_total_counted_earlier_shows_the_count_reached() -> None:
    # The reconciler's total is the keys waiting when it started; the worker may queue more meanwhile.
    progress, _, clock = reporter()
    progress.stage(unit="rows", total=10)
    clock.now += 1
    progress.advance(12)

    assert progress.line() == "job: 12 / 12 rows (100%), 12 rows/s"


def test_progress_rate_follows_a_change_of_pace_within_its_window() -> None:
    progress, _, clock = reporter()
    progress.stage(unit="rows", total=100_000)
    for _ in range(200):  # 1,000 rows/s for 20 s
        clock.now += 0.1
        progress.advance(100)
    for _ in range(150):  # then 100 rows/s for 15 s
        clock.now += 0.1
        progress.advance(10)

    match = LINE.fullmatch(progress.line())
    assert match is not None
    # Over the last ~10 s only: the fast start no longer counts (an average since the start would say 620).
    assert 95 <= int(match.group(4).replace(",", "")) <= 110


def test_progress_redraws_at_most_four_times_a_second() -> None:
    progress, terminal, clock = reporter()
    progress.stage(unit="rows", total=100_000)
    for _ in range(10_000):  # a row every millisecond for 10 s
        clock.now += 0.001
        progress.advance()

    times = [at for at, _ in terminal.drawn()]
    assert 40 <= len(times) <= 10 / REDRAW_INTERVAL_S + 1
    assert all(later - earlier >= REDRAW_INTERVAL_S - 1e-9 for earlier, later in itertools.pairwise(times))


@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 50)), min_size=1, max_size=300))
def test_progress_whatever_the_pace_redraws_are_spaced_and_show_the_count_of_their_moment(
    steps: list[tuple[int, int]],
) -> None:
    """Oracle: any sequence of (milliseconds, units) advances; each drawing after the stage's own is at least
    REDRAW_INTERVAL_S after the previous one and shows exactly the units counted up to that moment."""
    progress, terminal, clock = reporter()
    progress.stage(unit="rows", total=None)
    expected = ["job: 0 rows"]  # the stage's own drawing
    done = 0
    for milliseconds, units in steps:
        clock.now += milliseconds / 1000
        done += units
        before = len(terminal.drawn())
        progress.advance(units)
        expected += [f"job: {done:,} rows"] * (len(terminal.drawn()) - before)

    drawn = terminal.drawn()
    times = [at for at, _ in drawn]
    assert all(later - earlier >= REDRAW_INTERVAL_S - 1e-9 for earlier, later in itertools.pairwise(times))
    assert len(expected) == len(drawn)
    for (_, text), start in zip(drawn, expected, strict=True):
        assert text == start or text.startswith(start + ","), (text, start)
    assert len(drawn) <= 1 + (clock.now - 1000.0) / REDRAW_INTERVAL_S + 1


def test_progress_line_never_wider_than_the_terminal() -> None:
    progress, terminal, clock = reporter(width=30)
    progress.stage("a step with a long description", unit="rows", total=10**9)
    clock.now += 1
    progress.advance(123_456_789)

    assert terminal.drawn() and all(len(text) <= 29 for _, text in terminal.drawn())


def test_progress_finish_erases_the_line_then_returns_the_summary() -> None:
    progress, terminal, clock = reporter()
    progress.stage(unit="rows", total=3)
    clock.now += 185
    progress.advance(3)

    assert progress.finish("exported 3 row(s)") == "exported 3 row(s) (took 3 min 05 s)"
    assert terminal.getvalue().endswith("\x1b[K\r\x1b[K")
    assert terminal.writes[-1][1] == "\r\x1b[K"


def test_progress_never_drawn_erases_nothing() -> None:
    progress, terminal, _ = reporter()
    assert progress.finish("nothing to do") == "nothing to do (took 0.0 s)"
    assert terminal.getvalue() == ""


def test_progress_leaving_on_an_error_erases_the_line_for_the_error_message() -> None:
    progress, terminal, _ = reporter()
    with pytest.raises(RuntimeError), progress:
        progress.stage(unit="rows", total=5)
        raise RuntimeError("database away")

    assert terminal.getvalue() == "\rjob: 0 / 5 rows (0%)\x1b[K\r\x1b[K"


def test_progress_makes_room_for_a_log_line_then_redraws_below_it() -> None:
    progress, terminal, clock = reporter()
    handler = logging.StreamHandler(terminal)
    logging.getLogger().addHandler(handler)
    try:
        with progress:
            progress.stage(unit="rows", total=5)
            logging.getLogger("ottrecon.test").warning("a warning")
            clock.now += 1
            progress.advance()
        logging.getLogger("ottrecon.test").warning("after")
    finally:
        logging.getLogger().removeHandler(handler)

    assert terminal.getvalue() == (
        "\rjob: 0 / 5 rows (0%)\x1b[K\r\x1b[Ka warning\n"
        "\rjob: 1 / 5 rows (20%), 1 rows/s, 4 s left\x1b[K\r\x1b[Kafter\n"
    )
    assert not handler.filters


@given(
    pace=st.integers(min_value=1, max_value=5000),
    step_ms=st.integers(min_value=1, max_value=2000),
    steps=st.integers(min_value=1, max_value=400),
    extra=st.integers(min_value=0, max_value=10**6),
)
def test_progress_at_a_steady_pace_shows_exact_counts_and_the_exact_time_left(
    pace: int, step_ms: int, steps: int, extra: int
) -> None:
    """Oracle: at a steady pace every drawn line states the units done so far, floor(percent), the pace, and
    the remaining units divided by the pace, rounded up to a whole second."""
    progress, terminal, clock = reporter()
    total = pace * steps + extra
    progress.stage(unit="rows", total=total)
    done_at: dict[float, int] = {}
    for step in range(1, steps + 1):
        clock.now = 1000.0 + step * step_ms / 1000
        progress.advance(pace)
        done_at[clock.now] = pace * step

    for at, text in terminal.drawn()[1:]:
        match = LINE.fullmatch(text)
        assert match is not None, text
        done = int(match.group(1).replace(",", ""))
        assert done == done_at[at]
        assert int(match.group(2).replace(",", "")) == total
        assert int(match.group(3)) == 100 * done // total
        per_second = pace * 1000 / step_ms
        # Within the float error of the clock's arithmetic (a rate of 2.5 may round either way, 5.0 s left
        # may be 5.000000001 s): exact otherwise.
        assert abs(int(match.group(4).replace(",", "")) - per_second) <= 0.5 + 1e-6
        if done < total:
            left = (total - done) / per_second
            nearby = {format_duration(left * (1 + e), rounded=True) for e in (-1e-9, 0, 1e-9)}
            assert match.group(5) in nearby
        else:
            assert match.group(5) is None


@pytest.mark.parametrize(
    ("seconds", "rounded", "text"),
    [
        (0.04, False, "0.0 s"),
        (4.3, False, "4.3 s"),
        (42.4, False, "42 s"),
        (185, False, "3 min 05 s"),
        (7620, False, "2 h 07 min"),
        (0.2, True, "1 s"),
        (4.6, True, "5 s"),
        (59.5, True, "1 min 00 s"),
    ],
)
def test_format_duration_reads_like_a_person_would_say_it(seconds: float, rounded: bool, text: str) -> None:
    assert format_duration(seconds, rounded=rounded) == text


def test_interactive_stream_only_for_a_terminal_that_is_not_dumb() -> None:
    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=False) as terminal:
            assert interactive_stream(terminal, "xterm-256color")
            assert interactive_stream(terminal, None)
            assert not interactive_stream(terminal, "dumb")
        assert not interactive_stream(io.StringIO(), "xterm-256color")
    finally:
        os.close(leader)
        os.close(follower)
