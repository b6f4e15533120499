"""The command line every single benchmark shares: flags, machine facts, run, tables, --json, exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import Field, asdict
from typing import Any, ClassVar, Protocol, TypeVar

from bench.children import stop_on_sigterm
from bench.errors import BenchError
from bench.machine import facts_text, machine_facts
from bench.report import Target, dump_json, targets_table
from bench.support import add_common_arguments, server_url


class JudgedReport(Protocol):
    """A benchmark's result: a dataclass (so --json can dump it) that judges itself against its targets."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def targets(self) -> list[Target]: ...


OptionsT = TypeVar("OptionsT")
ReportT = TypeVar("ReportT", bound=JudgedReport)


def run_benchmark(
    argv: Sequence[str] | None,
    *,
    name: str,
    description: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    options_from: Callable[[argparse.Namespace], OptionsT],
    run: Callable[[OptionsT, dict[str, str]], ReportT],
    summary: Callable[[ReportT], str],
    uses_database: bool,
    cleaned_up: str,
) -> int:
    """`python -m <name>`: print the machine facts, run, print summary and targets; 0 when it ran.

    Exit 1 (message on stderr) when it could not run, 130 when interrupted; cleaned_up says what
    the benchmark's own `finally` blocks undid by then.
    """
    parser = argparse.ArgumentParser(prog=f"python -m {name}", description=description)
    add_arguments(parser)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    env = dict(os.environ)
    try:
        # Redis first, then Postgres only if this benchmark loads it: the first missing URL is the one reported.
        redis_url = server_url("REDIS_URL", env)
        facts = machine_facts(redis_url, server_url("DATABASE_URL", env) if uses_database else None)
        print(facts_text(facts) + "\n", flush=True)
        report = run(options_from(args), env)
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted; {cleaned_up}", file=sys.stderr)
        return 130
    print(summary(report))
    print(targets_table(report.targets()))
    if args.json is not None:
        dump_json(args.json, asdict(report))
    return 0
