"""The real system for the model-based tests: Postgres, the OTT Pay simulator on a test clock, the worker's
submitter and refunder, the api's order and refund creation; and the cent-for-cent comparison with the
reference model (tests/reconciliation_model.py).

Hypothesis state machines are synchronous, so a World owns an event loop of its own and runs every
coroutine to completion on it (`world.run(...)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer
from arq import ArqRedis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from ottpay.keys import MerchantKeys
from ottrecon.db import Connection
from ottrecon.payments.gateway import Gateway
from ottrecon.payments.refunder import Refunder
from ottrecon.payments.submission import Policy
from ottrecon.payments.submitter import Submitter
from ottrecon.queue import connect
from ottrecon.reconciliation.reports import export_report
from simulator.app import create_app as create_sim
from simulator.core import SIM, Simulator
from simulator.faults import Faults
from simulator.settings import SimulatorSettings
from tests import books_model
from tests import reconciliation_model as model

T = TypeVar("T")
BUSINESS_TZ = "America/Toronto"
OPERATOR = "1234567890"
# Every table the tests write, emptied between Hypothesis examples (cheaper than a database each).
TABLES = (
    "book_entries, book_closes, alert_events, alerts, ledger_refunds, ledger, recon_dirty, statement_lines, "
    "statement_imports, "
    "submission_attempts, refunds, payments, callbacks, rejected_callbacks, orders"
)
# A patient sweep never flags an order unpaid; an impatient one flags any order still unpaid.
PATIENT = Policy(passivepay_code_ttl_s=3600, base_delay_s=0.01, max_delay_s=0.01, sweep_after_s=0,
                 unpaid_deadline_s=10**7, sweep_max_age_s=10**8)  # fmt: skip
IMPATIENT = Policy(passivepay_code_ttl_s=3600, base_delay_s=0.01, max_delay_s=0.01, sweep_after_s=0,
                   unpaid_deadline_s=0, sweep_max_age_s=10**8)  # fmt: skip


def scaled(name: str, default: int) -> int:
    """A bound for `make test`, raised by `make soak` through the environment."""
    return int(os.environ.get(name, default))


def run_histories(machine: type[RuleBasedStateMachine], examples: int, steps: int) -> None:
    """Run a stateful test against the shared world: `examples` histories of up to `steps` steps, no deadline
    (a step waits on Postgres), no health checks (examples are slow by design)."""
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples, stateful_step_count=steps, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )


@dataclass
class World:
    """Handles on the running parts; created by `world()`, shared by every example of one test."""

    loop: asyncio.AbstractEventLoop
    pool: asyncpg.Pool
    redis: ArqRedis
    sim: Simulator
    merchants: MerchantKeys
    patient: Submitter
    impatient: Submitter
    refunder: Refunder
    now: datetime

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def reset(self, start: datetime) -> None:
        """Empty every table, forget the simulator's orders and set both clocks' start."""
        self.now = start
        self.run(self._reset())

    async def _reset(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        await self.sim.reset()

    def clock(self) -> datetime:
        return self.now


@contextlib.contextmanager
def world(database_url: str, redis_url: str, merchants: MerchantKeys) -> Iterator[World]:
    """Start the simulator (callbacks dropped: the tests deliver them), a pool and the worker's parts."""
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()

    async def start() -> World:
        ids = sorted({merchant_id for merchant_id in merchants})
        operators = dict.fromkeys(ids, OPERATOR)
        settings = SimulatorSettings(merchants=merchants, operators=operators, faults=Faults(drop_callback=1.0))
        app = create_sim(settings)
        server = await stack.enter_async_context(TestServer(app))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        # A statement that blocks fails the test instead of hanging it.
        pool = await asyncpg.create_pool(
            database_url, min_size=1, max_size=4, server_settings={"statement_timeout": "20000"}
        )
        stack.push_async_callback(pool.close)
        redis = connect(redis_url, 2.0)
        stack.push_async_callback(redis.aclose)
        gateway = Gateway(lambda: session, merchants, operators, base_url=str(server.make_url("/")), timeout_s=5)
        parts = dict(callback_url="http://127.0.0.1:9/dropped", lease_s=60)
        made = World(
            loop=loop,
            pool=pool,
            redis=redis,
            sim=app[SIM],
            merchants=merchants,
            patient=Submitter(pool, gateway, PATIENT, **parts),  # type: ignore[arg-type]
            impatient=Submitter(pool, gateway, IMPATIENT, **parts),  # type: ignore[arg-type]
            refunder=Refunder(pool, gateway, PATIENT, lease_s=60),
            now=datetime(2024, 1, 1, tzinfo=UTC),
        )
        made.sim.state.clock = made.clock
        return made

    try:
        yield loop.run_until_complete(start())
    finally:
        loop.run_until_complete(stack.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# ------------------------------------------------------------------------------------------- evidence


async def orders_from_db(conn: Connection) -> dict[model.Key, model.Order]:
    """Our orders as the submission state machine left them (its output is the reconciler's input)."""
    rows = await conn.fetch("SELECT * FROM orders")
    return {
        (r["merchant_id"], r["order_id"]): model.Order(
            kind=r["kind"],
            channel=r["biz_type"],
            amount=r["amount"],
            tip=r["tip"],
            status=r["status"],
            paid_amount=r["paid_amount"],
            paid_source=r["paid_source"],
            paid_at=r["paid_at"],
            unpaid_flagged_at=r["unpaid_flagged_at"],
            created_at=r["created_at"],
        )
        for r in rows
    }


async def answer_ids_from_db(conn: Connection) -> dict[model.Key, set[str]]:
    rows = await conn.fetch(
        "SELECT o.merchant_id, o.order_id, a.data->>'bizpay_order_id' AS id FROM submission_attempts a"
        " JOIN orders o ON o.id = a.order_ref WHERE a.outcome = 'success' AND a.refund_ref IS NULL"
        " AND a.data->>'bizpay_order_id' <> ''"
    )
    found: dict[model.Key, set[str]] = {}
    for r in rows:
        found.setdefault((r["merchant_id"], r["order_id"]), set()).add(r["id"])
    return found


async def evidence_from_db(conn: Connection) -> model.Evidence:
    """Every fact as committed (for the concurrency test, whose subject is not the parsing of facts)."""
    evidence = model.Evidence(orders=await orders_from_db(conn))
    for r in await conn.fetch("SELECT * FROM payments"):
        evidence.payments[(r["merchant_id"], r["order_id"])] = model.Payment(
            r["amount"], r["tip"], r["bizpay_order_id"], r["finish_time"], r["source"], r["created_at"]
        )
    for r in await conn.fetch("SELECT * FROM callbacks WHERE rsp_code = 'SUCCESS' ORDER BY id"):
        data = json.loads(r["data"])
        callback = model.Callback(
            int(data["amount"]), int(data.get("tip") or 0), data.get("bizpay_order_id") or None, r["received_at"]
        )
        evidence.callbacks[(r["merchant_id"], r["order_id"])].append(callback)
    refunds = await conn.fetch(
        "SELECT o.merchant_id, o.order_id, r.refund_order_id, r.amount, r.succeeded_at FROM refunds r"
        " JOIN orders o ON o.id = r.order_ref WHERE r.status = 'succeeded' ORDER BY r.id"
    )
    for r in refunds:
        refund = model.Refund(r["refund_order_id"], r["amount"], r["succeeded_at"])
        evidence.refunds[(r["merchant_id"], r["order_id"])].append(refund)
    evidence.answer_channel_ids.update(await answer_ids_from_db(conn))
    return evidence


# ------------------------------------------------------------------------------------------- comparing


async def ledger_from_db(conn: Connection) -> dict[model.Key, model.LedgerRow]:
    names = [f.name for f in fields(model.LedgerRow)]
    rows = await conn.fetch(f"SELECT {', '.join(names)} FROM ledger")
    found = {}
    for r in rows:
        values = dict(r)
        values["channel_payment_ids"] = tuple(values["channel_payment_ids"])
        values["statement_import_ids"] = tuple(values["statement_import_ids"])
        found[(r["merchant_id"], r["order_id"])] = model.LedgerRow(**values)
    return found


async def summary_from_db(pool: asyncpg.Pool) -> list[tuple[str, ...]]:
    out = io.StringIO()
    await export_report(pool, "summary", out)
    return [tuple(row) for row in list(csv.reader(io.StringIO(out.getvalue())))[1:]]


def summary_as_csv(rows: list[model.SummaryRow]) -> list[tuple[str, ...]]:
    return [tuple("" if v is None else str(v) for v in astuple(row)) for row in rows]


async def open_alerts_from_db(conn: Connection) -> dict[tuple[str, str, str], int]:
    rows = await conn.fetch("SELECT kind, merchant_id, order_id, amount_at_risk FROM alerts WHERE status = 'open'")
    return {(r["kind"], r["merchant_id"], r["order_id"]): r["amount_at_risk"] for r in rows}


async def assert_matches_model(
    pool: asyncpg.Pool, evidence: model.Evidence, history: list[str], books: books_model.Books | None = None
) -> list[tuple[str, ...]]:
    """Ledger rows, the daily summary and the open alerts equal the model's, cent for cent; returns the summary.

    With books (closing the books): the model books its adjustments first, and the summary compared is the
    one with closed dates frozen and adjustment rows; its figures added up per merchant and channel over
    every date equal the live truth (the summary without closes), cent for cent.
    """
    expected = model.reconcile(evidence, BUSINESS_TZ)
    async with pool.acquire() as conn:
        actual = await ledger_from_db(conn)
        alerts = await open_alerts_from_db(conn)
        queued = await conn.fetchval("SELECT count(*) FROM recon_dirty")
    assert queued == 0, f"{queued} change(s) still queued after reconciling"
    if actual != expected:
        raise AssertionError(_ledger_diff(expected, actual, history))
    bookings = model.refund_bookings(evidence, BUSINESS_TZ)
    truth = model.daily_summary(expected, bookings)
    if books is None:
        summary = summary_as_csv(truth)
    else:
        now = books_model.contributions(expected, bookings)
        books.book(now, books_model.line_ids(evidence))
        summary = summary_as_csv(books.summary(now))
    got = await summary_from_db(pool)
    assert got == summary, _lines("daily summary", summary, got, history)
    if books is not None:
        assert _added_up(got) == _added_up(summary_as_csv(truth)), _lines(
            "figures added up over every date (with adjustments) against the truth",
            _added_up(summary_as_csv(truth)),
            _added_up(got),
            history,
        )
    wanted = model.wanted_alerts(expected)
    assert alerts == wanted, _lines("open alerts", sorted(wanted.items()), sorted(alerts.items()), history)
    return got


def _added_up(rows: list[tuple[str, ...]]) -> dict[tuple[str, str], list[int]]:
    """Every figure (payments … unpaid, net included) summed per merchant and channel over every row."""
    sums: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        figures = [int(cell) for cell in row[3:12]]
        total = sums.setdefault((row[1], row[2]), [0] * len(figures))
        sums[(row[1], row[2])] = [a + b for a, b in zip(total, figures, strict=True)]
    # A merchant and channel whose figures add up to nothing (an adjustment and its reversal) is no figure.
    return dict(sorted((group, total) for group, total in sums.items() if any(total)))


def _ledger_diff(
    expected: Mapping[model.Key, model.LedgerRow], actual: Mapping[model.Key, model.LedgerRow], history: list[str]
) -> str:
    lines = ["the ledger differs from the model (docs/RECONCILIATION.md):"]
    for key in sorted(set(expected) | set(actual)):
        want, got = expected.get(key), actual.get(key)
        if want == got:
            continue
        if want is None or got is None:
            lines.append(f"  {key}: model {'has no row' if want is None else want}, ledger {got or 'has no row'}")
            continue
        for f in fields(model.LedgerRow):
            a, b = getattr(want, f.name), getattr(got, f.name)
            if a != b:
                lines.append(f"  {key} {f.name}: model {a!r}, ledger {b!r}")
    return "\n".join([*lines, "history:", *(f"  {step}" for step in history[-60:])])


def _lines(what: str, want: Any, got: Any, history: list[str]) -> str:
    return "\n".join(
        [f"{what} differs from the model:", f"  model  {want}", f"  system {got}", "history:", *history[-60:]]
    )
