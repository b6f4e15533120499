"""The `ottrecon` command: the operator's entry point and the only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from ottrecon import logs, progress
from ottrecon.commands import closing as closing_commands
from ottrecon.commands import failures
from ottrecon.commands import finance as finance_commands
from ottrecon.commands.env import UsageError, require
from ottrecon.commands.processes import PROCESSES
from ottrecon.payments.statuses import Channel, PaymentKind

if TYPE_CHECKING:
    from aiohttp import web

# How long SIGTERM waits for in-flight requests before cancelling them (deploy/systemd's TimeoutStopSec
# is longer). The receiver's requests take at most its 2 s enqueue timeout; the api's up to its wait_s.
RECEIVER_SHUTDOWN_GRACE_S = 10.0
API_SHUTDOWN_MARGIN_S = 10.0
# Commands whose one-line summary says what they did: their info logs would only repeat it, and cron mails every
# line they print, so they log warnings and errors unless LOG_LEVEL asks for more (decision 0032).
SUMMARISED = frozenset({"import-statement", "reconcile", "export", "replay-rejected", "requeue-dead"})


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    """Run one subcommand; returns the process exit code (commands/failures.py: 1 failed, 2 usage or
    configuration, 70 a bug)."""
    args = _parser().parse_args(argv)
    level = env.get("LOG_LEVEL", "WARNING" if args.command in SUMMARISED else "INFO")
    level_problem = logs.level_problem(level)
    logs.configure("INFO" if level_problem else level)
    # check-config reports it among everything else; every other command refuses to start.
    if level_problem and args.command != "check-config":
        print(f"ottrecon {args.command}: invalid configuration: {level_problem}", file=sys.stderr)
        return 2
    try:
        result: int = args.run(args, env)
    except Exception as exc:  # the operator gets one line and a documented exit code, never a traceback
        code, line = failures.describe(exc)
        logging.getLogger("ottrecon.cli").debug("%s failed", args.command, exc_info=exc)
        print(f"ottrecon {args.command}: {line}", file=sys.stderr)
        return code
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ottrecon", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ottrecon {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: object, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(run=run)
        return sub

    checked = command(
        "check-config",
        _check_config,
        "validate the variables of each process and reach PostgreSQL and Redis (exit 2: invalid, 1: unreachable)",
    )
    checked.add_argument(
        "processes", nargs="*", metavar="PROCESS", help=f"any of {', '.join(PROCESSES)} (default: all of them)"
    )
    command("migrate", _migrate, "apply pending SQL migrations (needs DATABASE_URL)")
    command("web", _web, "run the public callback receiver (needs REDIS_URL; PORT, default 8080)")
    command("worker", _worker, "run the callback worker (needs DATABASE_URL, REDIS_URL, OTTPAY_MERCHANTS)")
    command("api", _api, "run the internal payments API (needs DATABASE_URL, REDIS_URL, OTTRECON_API_TOKENS)")
    command("sim", _sim, "run the OTT Pay gateway simulator (needs OTTPAY_MERCHANTS; see docs/SIMULATOR.md)")
    pay = command("pay", _pay, "take a payment (stores it, then a running worker submits it)")
    pay.add_argument("--merchant", required=True)
    pay.add_argument("--kind", choices=[str(k) for k in PaymentKind], required=True)
    pay.add_argument("--biz-type", choices=[str(c) for c in Channel], required=True)
    pay.add_argument("--amount", type=int, required=True, help="integer cents")
    pay.add_argument("--tip", type=int, default=0, help="integer cents")
    pay.add_argument("--auth-code", help="PASSIVEPAY: the scanned wallet code")
    pay.add_argument("--idempotency-key", help="default: a new random key")
    pay.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the gateway's answer")
    refund = command("refund", _refund, "refund part or all of a paid payment")
    refund.add_argument("payment_id")
    refund.add_argument("--amount", type=int, required=True, help="integer cents")
    refund.add_argument("--idempotency-key", help="default: a new random key")
    refund.add_argument("--wait", type=float, default=10.0)
    command("replay-rejected", _replay, "re-verify rejected callbacks with the current keys")
    command("requeue-dead", _requeue_dead, "put dead-lettered callbacks back on the queue (needs REDIS_URL)")
    export = command("export", _export, "write payments, rejected callbacks or a ledger report as CSV")
    export.add_argument("what", choices=["payments", "rejected", *finance_commands.REPORTS])
    export.add_argument("--format", choices=["csv"], default="csv")
    export.add_argument(
        "-o", "--output", type=Path, help="write to this file, which appears only once complete (default: stdout)"
    )
    finance_commands.add_report_choices(export)
    finance_commands.register(command)
    closing_commands.register(command)
    command(
        "hash-password",
        _hash_password,
        "print a console password hash for OTTRECON_CONSOLE_USERS (password from a prompt or stdin)",
    )
    sample = command("make-callback", _make_callback, "print a correctly encrypted callback (for testing a setup)")
    sample.add_argument("--merchant", required=True, help="a merchant id configured in OTTPAY_MERCHANTS")
    sample.add_argument("--order-id", required=True)
    sample.add_argument("--amount", required=True, help="integer cents, e.g. 1250 for 12.50")
    sample.add_argument("--tip", default="0", help="integer cents")
    return parser


def _version() -> str:
    try:
        return version("ottrecon")
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown (not installed)"


def _check_config(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.commands.check_config import check, problems_message, warning_lines

    unknown = [name for name in args.processes if name not in PROCESSES]
    if unknown:
        raise UsageError(f"unknown process(es) {', '.join(unknown)}: choose from {', '.join(PROCESSES)}")
    processes = [name for name in PROCESSES if name in args.processes] or list(PROCESSES)
    report = check(env, processes)
    if report.exit_code:
        print(f"ottrecon check-config: {problems_message(report, processes)}", file=sys.stderr)
    else:
        reached = f"; reached {' and '.join(report.reached)}" if report.reached else ""
        print(f"configuration valid for {', '.join(processes)}{reached}")
        for line in warning_lines(report):
            print(f"ottrecon check-config:{line}", file=sys.stderr)
    return report.exit_code


def _migrate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.migrations import migrate

    (database_url,) = require(env, "DATABASE_URL")
    applied = asyncio.run(migrate(database_url))
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "nothing to do"
    print(f"migrations applied: {names}", file=sys.stderr)
    return 0


def _web(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from prometheus_client import start_http_server

    from webhook.app import create_app
    from webhook.settings import WebhookSettings

    settings = WebhookSettings.from_env(env)
    if settings.metrics_port:
        # Its own port (a daemon thread), so /metrics never answers on the public receiver port.
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    # SIGTERM: stop accepting, let in-flight callbacks finish their enqueue (at most enqueue_timeout_s,
    # then a 503 the sender retries), close Redis, exit 0. The grace period bounds a stuck request.
    _serve(create_app(settings), settings.host, settings.port, grace_s=RECEIVER_SHUTDOWN_GRACE_S)
    return 0


def _api(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.api.app import create_app
    from ottrecon.api.settings import ApiSettings

    settings = ApiSettings.from_env(env)
    # SIGTERM: in-flight requests finish, a POST waiting for the gateway included (up to wait_s).
    _serve(create_app(settings), settings.host, settings.port, grace_s=settings.wait_s + API_SHUTDOWN_MARGIN_S)
    return 0


def _serve(app: web.Application, host: str, port: int, *, grace_s: float) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting and give in-flight requests grace_s to finish."""
    from aiohttp import web

    web.run_app(app, host=host, port=port, access_log=None, print=None, shutdown_timeout=grace_s)


def _sim(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        from simulator.main import run
    except ModuleNotFoundError as exc:
        if exc.name != "simulator":
            raise
        # The production wheel leaves the fake gateway out on purpose (docs/decisions/0014).
        raise UsageError(
            "the gateway simulator is a development tool and is not part of this installation; "
            "in a checkout `make run` installs it, or install it from the source: pip install ./simulator"
        ) from None
    return run(env)


def _pay(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.commands.payments import pay

    return asyncio.run(pay(args, env))


def _refund(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.commands.payments import refund

    return asyncio.run(refund(args, env))


def _worker(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from prometheus_client import start_http_server

    from worker.main import create_worker
    from worker.settings import WorkerSettings

    settings = WorkerSettings.from_env(env)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    create_worker(settings).run()
    return 0


def _replay(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon import db
    from ottrecon.callbacks.replay import replay_rejected
    from worker.settings import WorkerSettings

    settings = WorkerSettings.from_env(env)

    async def run(shown: progress.Progress) -> str:
        pool = await db.create_pool(settings.database_url, 2)
        try:
            report = await replay_rejected(pool, settings.merchants, progress=shown)
        finally:
            await pool.close()
        return (
            f"recorded {report.recorded}, already recorded {report.duplicate}, still rejected {report.still_rejected}"
        )

    with progress.for_command("replay-rejected", env) as shown:
        print(shown.finish(asyncio.run(run(shown))))
    return 0


def _requeue_dead(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon.callbacks.deadletter import requeue_dead

    (redis_url,) = require(env, "REDIS_URL")
    with progress.for_command("requeue-dead", env) as shown:
        moved = asyncio.run(requeue_dead(redis_url, progress=shown))
        print(shown.finish(f"requeued {moved} dead-lettered job(s)"))
    return 0


def _export(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottrecon import db
    from ottrecon.commands.output import csv_target
    from ottrecon.reconciliation.raw_exports import export_csv
    from ottrecon.reconciliation.reports import export_report

    (database_url,) = require(env, "DATABASE_URL")
    if args.what in finance_commands.REPORTS:
        finance_commands.report_dates(args)

    async def run(shown: progress.Progress) -> int:
        # Connected before a byte is written: an unreachable database leaves no header that passes for an export.
        async with db.translate_errors():
            pool = await db.create_pool(database_url, 1, min_size=1)
        try:
            with csv_target(args.output) as out:
                if args.what in finance_commands.REPORTS:
                    dates = {"date_from": args.date_from, "date_to": args.date_to}
                    return await export_report(pool, args.what, out, **dates, merchant_id=args.merchant, progress=shown)
                return await export_csv(pool, args.what, out, progress=shown)
        finally:
            await pool.close()

    # Progress and the summary on stderr only: stdout may be the CSV.
    with progress.for_command(f"export {args.what}", env, stdout_is_data=args.output is None) as shown:
        rows = asyncio.run(run(shown))
        written = f"exported {rows} row(s)" + (f" to {args.output}" if args.output else "")
        print(shown.finish(written), file=sys.stderr)
    return 0


# Shorter passwords are refused: the hash may be read by anyone who can read the api's environment.
MIN_PASSWORD_LENGTH = 12


def _hash_password(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import getpass

    from ottrecon.console.passwords import hash_password

    # Never from argv: the command line is visible to every user of the machine and kept in shell history.
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise UsageError("the two passwords differ; nothing printed")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsageError(f"a console password needs at least {MIN_PASSWORD_LENGTH} characters")
    print(hash_password(password))
    return 0


def _make_callback(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from ottpay.envelope import build_callback
    from ottpay.finish_time import BEIJING
    from ottpay.keys import parse_merchant_keys
    from ottpay.messages import parse_cents

    (merchants_text,) = require(env, "OTTPAY_MERCHANTS")
    try:
        keys = parse_merchant_keys(merchants_text).keys_for(args.merchant)
        parse_cents(args.amount)
        parse_cents(args.tip)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if not keys:
        raise UsageError(f"merchant {args.merchant} is not in OTTPAY_MERCHANTS")
    # OTT Pay writes zone-less Beijing wall-clock time (PROTOCOL.md section 4, decision 0007); so does the sample.
    now = datetime.now(BEIJING)
    data = {
        "amount": args.amount,
        "bizpay_order_id": "AL" + now.strftime("%Y%m%d%H%M%S%f"),
        "tip": args.tip,
        "merchant_id": args.merchant,
        "order_id": args.order_id,
        "finish_time": now.strftime("%Y%m%d%H%M%S"),
    }
    # The first configured key signs: the one OTT Pay holds (decision 0029).
    print(json.dumps(build_callback(data, args.merchant, keys[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
