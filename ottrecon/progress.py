"""Progress of a long command on a terminal (done, rate, time left) and its one-line summary.

A command's composition root (the CLI) decides whether stderr is a terminal; everything below it only
calls stage() and advance(). Without a terminal nothing is drawn, so cron mail holds the summary alone.
"""

from __future__ import annotations

import io
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TextIO

# At most four redraws a second: smooth enough to read, cheap enough for a slow ssh link or a screen log.
REDRAW_INTERVAL_S = 0.25
# The rate is measured over the last seconds only, so the time left follows a command that speeds up or slows
# down (a ledger export slows where the rows get wider; the reconciler speeds up once its caches are warm).
RATE_WINDOW_S = 10.0
# A rate measured over less than this is noise: the first batch's round trip, say.
MIN_RATE_SPAN_S = 0.2
# Used when the terminal cannot say its width; a line wider than the terminal would wrap and break the redraw.
DEFAULT_WIDTH = 80
# Return to the line's start; erase from the cursor to the line's end (ANSI EL, understood by every terminal
# emulator in use; a "dumb" terminal is never drawn on, see interactive_stream).
_RETURN, _ERASE = "\r", "\x1b[K"


def interactive_stream(stream: TextIO, term: str | None) -> bool:
    """Whether progress should be drawn on stream: it is a terminal, and not one declared dumb (TERM=dumb: an
    editor's shell buffer, which prints carriage returns instead of obeying them)."""
    return term != "dumb" and stream.isatty()


def for_command(name: str, env: Mapping[str, str], *, stdout_is_data: bool = False) -> Progress:
    """The reporter of an `ottrecon` command: drawn on stderr when it is a terminal. stdout_is_data (an export):
    not drawn when stdout is a terminal too, where the rows themselves show the progress and redraws would
    garble them."""
    interactive = interactive_stream(sys.stderr, env.get("TERM"))
    if stdout_is_data and sys.stdout.isatty():
        interactive = False
    return Progress(sys.stderr, name, interactive=interactive)


class Progress:
    """One command's progress: stages of work, each counted in its own unit, and the elapsed time.

    Not thread-safe; meant for one asyncio task. When interactive is False nothing is ever written:
    advance() only counts, and finish() returns the summary for the caller to print where it belongs.
    """

    def __init__(
        self,
        stream: TextIO,
        name: str,
        *,
        interactive: bool,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
        interval_s: float = REDRAW_INTERVAL_S,
    ) -> None:
        self._stream = stream
        self._name = name
        self._interactive = interactive
        self._clock = clock
        self._width = width
        self._interval_s = interval_s
        self._started = clock()
        self._label = name
        self._unit: str | None = None
        self._total: int | None = None
        self._done = 0
        self._samples: deque[tuple[float, int]] = deque([(self._started, 0)])
        self._next_draw = self._started
        self._drawn = False

    @classmethod
    def silent(cls) -> Progress:
        """A reporter that only counts (the default of functions that take one: the worker, the console, tests)."""
        return cls(io.StringIO(), "", interactive=False)

    @property
    def interactive(self) -> bool:
        """Whether progress is drawn: callers skip the work of counting a total when it is not."""
        return self._interactive

    @property
    def done(self) -> int:
        """Units done in the current stage."""
        return self._done

    def stage(self, step: str | None = None, *, unit: str | None = None, total: int | None = None) -> None:
        """Start a stage of work (step: what it does, shown after the command's name) counted in unit, out of
        total when known. unit None: a step that cannot be counted, shown as waiting.

        Drawn at once (stages are few), so a step that takes long before its first unit is visible.
        """
        self._label = f"{self._name}: {step}" if step else self._name
        self._unit, self._total, self._done = unit, total, 0
        self._samples.clear()
        now = self._clock()
        self._samples.append((now, 0))
        if self._interactive:
            self._draw(now)

    def advance(self, units: int = 1) -> None:
        """Count units done; redraw when the last drawing is older than the redraw interval. Cheap per row."""
        self._done += units
        if self._interactive:
            now = self._clock()
            if now >= self._next_draw:
                self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The progress text as drawn now (without the terminal's control characters)."""
        if now is None:
            now = self._clock()
        unit = self._unit
        if unit is None:
            return f"{self._label}..."
        if self._total is None:
            text = f"{self._label}: {_amount(self._done, unit)}"
        else:
            total = max(self._total, self._done)  # a count taken before the work began: more may have come since
            percent = 100 * self._done // total if total else 100
            text = f"{self._label}: {_amounts(self._done, total, unit)} ({percent}%)"
        rate = self.rate(now)
        if rate is not None:
            text += f", {_amount(round(rate), unit)}/s"
            if self._total is not None and self._total > self._done and rate > 0:
                text += f", {format_duration((self._total - self._done) / rate, rounded=True)} left"
        return text

    def rate(self, now: float) -> float | None:
        """Units per second over about the last RATE_WINDOW_S of this stage; None until measured long enough."""
        since, done_then = self._samples[0]
        if now - since < MIN_RATE_SPAN_S:
            return None
        return (self._done - done_then) / (now - since)

    def elapsed(self) -> float:
        """Seconds since the command's progress began (all stages)."""
        return self._clock() - self._started

    def finish(self, outcome: str) -> str:
        """Erase the progress line and return the one-line summary: the outcome and how long it took."""
        self.clear()
        return f"{outcome} (took {format_duration(self.elapsed())})"

    def clear(self) -> None:
        """Erase the progress line, if one is drawn (before anything else is printed on the terminal)."""
        if self._drawn:
            self._stream.write(_RETURN + _ERASE)
            self._stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        """While entered, a log record (a warning, say) erases the progress line first and so gets a line of its
        own; the next redraw starts below it."""
        if self._interactive:
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._clear_for_log)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._clear_for_log)
        # A command failing half-way prints its error on a clean line, not after the progress text.
        self.clear()

    def _clear_for_log(self, record: logging.LogRecord) -> bool:
        self.clear()
        return True  # a filter that keeps every record: it only makes room for it

    def _draw(self, now: float) -> None:
        self._samples.append((now, self._done))
        # Keep the newest sample at least RATE_WINDOW_S old as the rate's anchor, and every one after it.
        while len(self._samples) > 1 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        text = self.line(now)[: self._columns() - 1]  # the last column: some terminals wrap on it
        self._stream.write(_RETURN + text + _ERASE)
        self._stream.flush()
        self._drawn = True
        self._next_draw = now + self._interval_s

    def _columns(self) -> int:
        if self._width is None:
            try:
                self._width = os.get_terminal_size(self._stream.fileno()).columns or DEFAULT_WIDTH
            except (OSError, ValueError):  # not a terminal after all, or a stream without a descriptor
                self._width = DEFAULT_WIDTH
        return self._width


def _amount(value: int, unit: str) -> str:
    """A quantity for people: '12,345 rows', bytes as '3.4 MB'."""
    return _bytes(value) if unit == "bytes" else f"{value:,} {unit}"


def _amounts(done: int, total: int, unit: str) -> str:
    """'1,234 / 5,000 rows', '1.2 MB / 3.4 MB'."""
    if unit == "bytes":
        return f"{_bytes(done)} / {_bytes(total)}"
    return f"{done:,} / {total:,} {unit}"


def _bytes(value: int) -> str:
    for size, name in ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")):
        if value >= size:
            return f"{value / size:.1f} {name}"
    return f"{value} B"


def format_duration(seconds: float, *, rounded: bool = False) -> str:
    """'0.4 s', '42 s', '3 min 05 s', '2 h 07 min'; rounded (a time left, an estimate): whole seconds, never '0 s'."""
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0
    if seconds < 10 and not rounded:
        return f"{seconds:.1f} s"
    whole = max(1, round(seconds)) if rounded else round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
