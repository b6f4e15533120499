"""Closing the books from the command line: `ottrecon close`, `ottrecon reopen`, `ottrecon closes list`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ottrecon.commands.env import require
from ottrecon.commands.finance import business_tz, display_tz, with_pool
from ottrecon.config import EnvReader
from ottrecon.errors import ConfigError
from ottrecon.money import format_money

if TYPE_CHECKING:
    import asyncpg  # types only, as in commands/finance.py


def register(command: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    """Add this module's subcommands to the `ottrecon` parser."""
    close = command("close", _close, "close business dates: their summary never changes again (adjustments instead)")
    close.add_argument("date", type=date.fromisoformat, help="business date, YYYY-MM-DD")
    close.add_argument("--to", dest="date_to", type=date.fromisoformat, help="close every date up to this one too")
    close.add_argument("--merchant", help="close for this merchant only (default: every merchant)")
    close.add_argument("--note", required=True, help="why, for the audit and the close report")
    close.add_argument(
        "--force", metavar="REASON", help="close although mismatches are unacknowledged, recording who and why"
    )
    close.add_argument("--actor", default=getpass.getuser(), help="who (default: the OS user)")
    reopen = command("reopen", _reopen, "reopen a closed business date (folds its adjustments back)")
    reopen.add_argument("date", type=date.fromisoformat, help="business date, YYYY-MM-DD")
    reopen.add_argument("--merchant", help="the merchant it was closed for (default: closed for every merchant)")
    reopen.add_argument("--reason", required=True, help="why, for the audit")
    reopen.add_argument("--actor", default=getpass.getuser(), help="who (default: the OS user)")
    closes = command("closes", _closes, "list who closed which business dates, and reopenings")
    closes.add_argument("action", choices=["list"])
    closes.add_argument("--from", dest="date_from", type=date.fromisoformat, help="business date, YYYY-MM-DD")
    closes.add_argument("--to", dest="date_to", type=date.fromisoformat, help="business date, YYYY-MM-DD")


def _close(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.reconciliation import closing

    currency = _currency(env)
    today = datetime.now(ZoneInfo(business_tz(env))).date()

    async def run(pool: asyncpg.Pool) -> closing.CloseReport:
        return await closing.close_dates(
            pool,
            args.date,
            args.date_to or args.date,
            merchant_id=args.merchant,
            note=args.note,
            actor=args.actor,
            today=today,
            force_reason=args.force,
        )

    try:
        report = asyncio.run(with_pool(require(env, "DATABASE_URL")[0], run))
    except closing.UnacknowledgedMismatches as exc:
        print(f"ottrecon close: {exc}", file=sys.stderr)
        for m in exc.mismatches:
            print(
                f"  alert {m.alert_id}  {m.business_date}  {m.merchant_id}  {m.order_id}  {m.kind}  "
                f"{format_money(m.amount_at_risk, currency)} at risk",
                file=sys.stderr,
            )
        return 1
    scope = f"for {args.merchant}" if args.merchant else "for every merchant"
    if report.closed:
        print(f"closed {', '.join(map(str, report.closed))} {scope}")
    if report.already_closed:
        print(f"already closed: {', '.join(map(str, report.already_closed))}")
    if report.forced_over:
        print(f"forced over {len(report.forced_over)} unacknowledged mismatch(es): {args.force}")
    return 0


def _reopen(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.reconciliation import closing

    async def run(pool: asyncpg.Pool) -> closing.Close:
        return await closing.reopen_date(
            pool, args.date, merchant_id=args.merchant, reason=args.reason, actor=args.actor
        )

    reopened = asyncio.run(with_pool(require(env, "DATABASE_URL")[0], run))
    scope = f"for {reopened.merchant_id}" if reopened.merchant_id else "for every merchant"
    print(f"reopened {reopened.business_date} {scope} (closed by {reopened.closed_by}): its figures are live again")
    return 0


def _closes(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.reconciliation import closing

    async def run(pool: asyncpg.Pool) -> list[closing.Close]:
        return await closing.list_closes(pool, date_from=args.date_from, date_to=args.date_to)

    found = asyncio.run(with_pool(require(env, "DATABASE_URL")[0], run))
    print(closing.format_closes(found, ZoneInfo(display_tz(env))), end="")
    return 0


def _currency(env: Mapping[str, str]) -> str:
    problems: list[str] = []
    currency = EnvReader(env, problems).currency()
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return currency
