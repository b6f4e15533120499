"""Finance and on-call commands: reconcile, import-statement, alerts, and the ledger reports."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ottrecon import progress
from ottrecon.commands.env import UsageError, require
from ottrecon.config import EnvReader

if TYPE_CHECKING:
    # Types only: `ottrecon web` builds this module's subcommands too, and needs no database driver.
    import asyncpg

T = TypeVar("T")
REPORTS = ("ledger", "summary", "mismatches", "adjustments", "close-report")


def register(command: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    """Add this module's subcommands to the `ottrecon` parser."""
    recon = command("reconcile", _reconcile, "reconcile the ledger now (the worker also does it continuously)")
    recon.add_argument("--all", action="store_true", help="rebuild every ledger row, not only changed ones")
    recon.add_argument(
        "--jobs",
        type=_at_least_one,
        help="batches reconciled at once, each on its own Postgres connection "
        "(default: OTTRECON_RECONCILE_CONCURRENCY, else 2)",
    )
    statement = command("import-statement", _import_statement, "import an OTT Pay settlement statement (CSV)")
    statement.add_argument("file", type=Path)
    statement.add_argument("--columns", help="field=Header mapping, e.g. 'order_id=Order No,amount=Amount'")
    statement.add_argument("--amounts", choices=["cents", "decimal"], default="cents")
    statement.add_argument("--from", dest="date_from", type=iso_date, help="period start, YYYY-MM-DD")
    statement.add_argument("--to", dest="date_to", type=iso_date, help="period end, YYYY-MM-DD")
    statement.add_argument(
        "--merchant",
        dest="merchants",
        action="append",
        default=[],
        metavar="MID",
        help="whose statement this is (repeat, or separate by commas, for several); every line must name one. "
        "Needed for a file without lines: it then says nothing was settled for them (default: the lines' merchants)",
    )
    alerts = command("alerts", _alerts, "list, acknowledge or resolve alerts")
    alerts.add_argument("action", choices=["list", "ack", "resolve"])
    alerts.add_argument("alert_id", nargs="?", type=int)
    alerts.add_argument("--note", default="", help="why (required to resolve)")
    alerts.add_argument("--actor", default=getpass.getuser(), help="who (default: the OS user)")
    alerts.add_argument("--status", help="list: open, acknowledged or resolved (default: not resolved)")
    alerts.add_argument("--kind")


def iso_date(text: str) -> date:
    """An argparse type: a calendar date written YYYY-MM-DD (argparse turns the error into a usage line, exit 2)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date as YYYY-MM-DD: {text!r}") from None


def add_report_choices(export: argparse.ArgumentParser) -> None:
    """`ottrecon export ledger|summary|mismatches|adjustments|close-report` filters (the ledger reports)."""
    export.add_argument("--from", dest="date_from", type=iso_date, help="business date, YYYY-MM-DD")
    export.add_argument("--to", dest="date_to", type=iso_date, help="business date, YYYY-MM-DD")
    export.add_argument("--merchant")
    export.add_argument(
        "--month", type=_month, help="close-report: the business dates of a month, YYYY-MM (instead of --from/--to)"
    )


def _month(text: str) -> tuple[date, date]:
    """An argparse type: YYYY-MM as its first and last day (argparse turns the error into a usage line, exit 2)."""
    try:
        first = date.fromisoformat(f"{text}-01")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a month as YYYY-MM: {text!r}") from None
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, following - timedelta(days=1)


def report_dates(args: argparse.Namespace) -> None:
    """Settle --month against --from/--to in args (a usage error if both), and the close report's one-date default."""
    if args.month is not None:
        if args.date_from or args.date_to:
            raise UsageError("give --month or --from/--to, not both")
        args.date_from, args.date_to = args.month
    if args.what == "close-report":
        if args.date_from is None:
            raise UsageError("the close report is of a date or a month: --from DATE [--to DATE] or --month YYYY-MM")
        args.date_to = args.date_to or args.date_from


def business_tz(env: Mapping[str, str]) -> str:
    return env.get("OTTRECON_BUSINESS_TZ", "").strip() or "America/Toronto"


def display_tz(env: Mapping[str, str]) -> str:
    return env.get("OTTRECON_DISPLAY_TZ", "").strip() or "America/Toronto"


def _at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def reconcile_concurrency(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """--jobs, else OTTRECON_RECONCILE_CONCURRENCY (as the worker reads it), else the reconciler's default."""
    from ottrecon.reconciliation.reconcile import DEFAULT_CONCURRENCY

    if args.jobs is not None:
        return int(args.jobs)
    problems: list[str] = []
    jobs = int(EnvReader(env, problems).number("OTTRECON_RECONCILE_CONCURRENCY", DEFAULT_CONCURRENCY, minimum=1))
    if problems:
        raise UsageError("invalid configuration: " + "; ".join(problems))
    return jobs


async def with_pool(database_url: str, run: Callable[[asyncpg.Pool], Awaitable[T]], size: int = 2) -> T:
    from ottrecon import db

    pool = await db.create_pool(database_url, size)
    try:
        return await run(pool)
    finally:
        await pool.close()


def _reconcile(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.reconciliation.reconcile import mark_all_dirty, reconcile_pending

    jobs = reconcile_concurrency(args, env)

    async def run(pool: asyncpg.Pool) -> str:
        queued = 0
        if args.all:
            shown.stage("queueing every key")
            queued = await mark_all_dirty(pool)
        report = await reconcile_pending(pool, business_tz=business_tz(env), progress=shown, concurrency=jobs)
        return (
            f"reconciled {report.keys} key(s) ({queued} queued by --all); alerts opened {report.opened}, "
            f"reopened {report.reopened}, resolved {report.resolved}"
        )

    with progress.for_command("reconcile --all" if args.all else "reconcile", env) as shown:
        print(shown.finish(asyncio.run(with_pool(require(env, "DATABASE_URL")[0], run, size=max(2, jobs)))))
    return 0


def _import_statement(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.reconciliation.layouts import StatementError, StatementLayout
    from ottrecon.reconciliation.statements import import_statement, split_merchants

    if (args.date_from is None) != (args.date_to is None):
        print("ottrecon import-statement: give both --from and --to, or neither", file=sys.stderr)
        return 2
    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    try:
        layout = (
            StatementLayout.from_spec(args.columns, args.amounts)
            if args.columns
            else StatementLayout(amounts=args.amounts)
        )
        period = (args.date_from, args.date_to) if args.date_from else None
        shown = progress.for_command("import-statement", env)

        async def run(pool: asyncpg.Pool) -> Any:
            return await import_statement(
                pool,
                args.file,
                layout,
                business_tz=business_tz(env),
                period=period,
                merchants=split_merchants(args.merchants),
                progress=shown,
            )

        with shown:
            report = asyncio.run(with_pool(require(env, "DATABASE_URL")[0], run))
    except StatementError as exc:
        print(f"ottrecon import-statement: {exc}", file=sys.stderr)
        return 2
    if report.already_imported:
        print(shown.finish(f"{args.file.name} was already imported: nothing stored"))
        return 0
    outcome = (
        f"imported {report.lines_stored} line(s) ({report.unchanged_lines} unchanged from earlier statements) "
        f"for {', '.join(report.merchant_ids)}, {report.period_start} to {report.period_end}"
    )
    if report.repeated_payments:  # on the summary line itself: cron mail and `| tail -1` keep it
        outcome += (
            f"; warning: {report.repeated_payments} line(s) repeat a payment listed earlier in this file "
            "(settled twice?): see the duplicate_settlement mismatches"
        )
    outcome += "; the worker reconciles them within seconds (or run `ottrecon reconcile`)"
    print(shown.finish(outcome))
    return 0


def _alerts(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.reconciliation import alerts as alert_admin

    problems: list[str] = []
    currency = EnvReader(env, problems).currency()
    if problems:
        raise UsageError("invalid configuration: " + "; ".join(problems))
    if args.action != "list" and args.alert_id is None:
        print(f"ottrecon alerts {args.action}: give the alert id", file=sys.stderr)
        return 2

    async def run(pool: asyncpg.Pool) -> str:
        if args.action == "list":
            found = await alert_admin.list_alerts(pool, status=args.status, kind=args.kind)
            return alert_admin.format_alert_table(found, display_tz(env), currency)
        change = alert_admin.acknowledge if args.action == "ack" else alert_admin.resolve
        alert = await change(pool, args.alert_id, actor=args.actor, note=args.note)
        return f"alert {alert.id} is now {alert.status}\n"

    try:
        print(asyncio.run(with_pool(require(env, "DATABASE_URL")[0], run)), end="")
    except alert_admin.AlertError as exc:
        print(f"ottrecon alerts {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0
