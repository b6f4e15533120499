"""How results leave a benchmark: plain text tables, the targets verdict, and --json files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

# (what, measured, target, met): one row of a benchmark's targets() and of the final summary.
Target = tuple[str, str, str, bool]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: left-aligned first column, right-aligned numbers."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))])

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def met(ok: bool) -> str:
    """The "met" column: a missed target shouts."""
    return "yes" if ok else "NO"


def targets_table(targets: Sequence[Target]) -> str:
    """A benchmark's targets as the table its command line prints last."""
    return table(
        ["target", "measured", "goal", "met"], [[what, measured, goal, met(ok)] for what, measured, goal, ok in targets]
    )


def dump_json(path: Path, value: object) -> None:
    """Write a result as indented JSON (for --json)."""
    path.write_text(json.dumps(value, indent=2, default=str) + "\n")
