"""The benchmarks' one exception: a benchmark could not run (as opposed to running and missing a target)."""

from __future__ import annotations


class BenchError(Exception):
    """A benchmark could not run; the message says why."""
