"""Statement imports racing each other, the reconciler and ordinary writers, checked against a reference of our own.

Written by a tester who did not write the import, from docs/RECONCILIATION.md ("Settlement statements"),
docs/STATEMENTS.md and decisions 0023, 0045 and 0047 alone. The claims attacked: with real concurrency, after one
final drain of reconcile_pending,

1. each statement file (its bytes) is imported at most once, whatever the file's name and however many imports of
   it run at once; the one that stores it stores exactly the file's lines, and the others report it as already
   imported (the only documented refusal that can happen here: every generated file is valid);
2. every ledger row's statement fields (status, amount, tip, refund, fee, import and line ids, statement amount at
   risk), its business date, recon status, amount at risk, received amount/tip, refunded amount and channel ids
   equal what the reference below computes from the files as written, the order in which they were imported and
   the payments, callbacks and refunds the writers committed (and a key with no evidence left has no row);
3. nothing is left stale: once every task has stopped and before the drain, a key whose ledger row differs from the
   reference is still queued in recon_dirty;
4. no deadlock, no lock or statement timeout, no error of any import, writer or reconciler; and, polled every 10 ms
   from pg_locks/pg_blocking_pids, nobody waits for a writer but a writer, a writer never waits for an import or a
   reconciler, an import waits only for the books lock, and so does a reconciler batch that waits for an import
   (decisions 0045 and 0047);
5. each import's report says what it did: lines read and stored, repeated payments, period, merchants, and the
   lines an earlier import stated identically (unchanged_lines; imports take turns, so "earlier" is a smaller id).

A round (seeded: OTTRECON_IMPORT_STRESS_SEED replays its plans and files, not its timing; every failure names the
seed) plans a few orders of two merchants (some created during the round), payments for some of them dated on the
last days (recorded by signed callbacks through callbacks.store.record_on, and/or as a status query's attempt,
payment and transition through payments.store), refunds of some (settled through payments.store.settle_refund),
orphan payments, keys known only from statements, and 2-5 statement files: new ones, corrections of earlier ones
(lines dropped, amounts and dates changed, period end kept or moved later), byte-identical copies under another
name, and the same path imported twice at once; periods given or taken from the lines; times written as wall time,
a bare date, UTC or left empty. Everything then starts at random moments within a fraction of a second: one task
per import (the real import_statement, through a pool of its own), one per key for its writes (own transactions,
some held open, some rolled back), and 1-2 reconcile_pending loops (small batches, concurrency 1-2; in some rounds
they stop early, leaving much queued for the stale check). Timing jitter only, no faked code: statement-level
triggers of the test database sleep a few random milliseconds after a statement inserts lines, an import or ledger
rows, or deletes from recon_dirty (a claim), widening the windows decision 0047 is about; they change no data.

The reference is written from the docs, not from the SQL: a line of import I is superseded when an import that
outranks I (later period end; same end: larger id, i.e. imported later) names its merchant and covers its business
date, or lists the same gateway payment (merchant, order, channel id; empty counts as one id). Knobs:
OTTRECON_IMPORT_STRESS_ROUNDS (default 10, ~10 s on the 2-core machine; more rounds need pytest's --timeout raised),
OTTRECON_IMPORT_STRESS_SEED.

Teeth (checked by hand with scratch pytest plugins, not kept): import_statement without its books lock fails within
the first rounds (same-file imports wait for each other's uncommitted row, reports count unchanged lines wrongly,
and keys are left stale with nothing queued: a superseded line still current, not_in_statement missing); the
import's queueing trigger without its statement-lines half, or without its ledger half, fails 2 runs in 3.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
import traceback
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from ottpay.envelope import build_callback
from ottpay.finish_time import parse_finish_time
from ottpay.keys import MerchantKeys
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.verdicts import VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.db import Connection, fetch_one
from ottrecon.payments import refund_store
from ottrecon.payments import store as payments_store
from ottrecon.payments.submission import Transition
from ottrecon.reconciliation.books_lock import BOOKS_LOCK
from ottrecon.reconciliation.layouts import ImportReport, StatementError, StatementLayout
from ottrecon.reconciliation.reconcile import reconcile_pending
from ottrecon.reconciliation.statements import import_statement
from tests.conftest import MERCHANT, OTHER_MERCHANT

TZ = "America/Toronto"
TORONTO = ZoneInfo(TZ)
BEIJING = ZoneInfo("Asia/Shanghai")
ROUNDS = int(os.environ.get("OTTRECON_IMPORT_STRESS_ROUNDS", "10"))
SEED = int(os.environ.get("OTTRECON_IMPORT_STRESS_SEED", str(random.SystemRandom().randrange(10**9))))
MERCHANT_IDS = (MERCHANT, OTHER_MERCHANT)
HEADER = "merchant_id,order_id,bizpay_order_id,amount,tip,fee,refund,txn_time\n"
# Everything a round writes, emptied before the next one.
TABLES = (
    "book_entries, book_closes, alert_events, alerts, ledger_refunds, ledger, recon_dirty, statement_lines, "
    "statement_imports, submission_attempts, refunds, payments, callbacks, rejected_callbacks, orders"
)
# Timing only: a statement that writes these tables sleeps up to TG_ARGV[0] seconds after it ran.
JITTER = """
CREATE FUNCTION stress_jitter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(random() * TG_ARGV[0]::float8);
    RETURN NULL;
END $$;
CREATE TRIGGER zz_jitter AFTER INSERT ON statement_imports FOR EACH STATEMENT EXECUTE FUNCTION stress_jitter('0.03');
CREATE TRIGGER zz_jitter AFTER INSERT ON statement_lines FOR EACH STATEMENT EXECUTE FUNCTION stress_jitter('0.03');
CREATE TRIGGER zz_jitter AFTER INSERT ON ledger FOR EACH STATEMENT EXECUTE FUNCTION stress_jitter('0.01');
CREATE TRIGGER zz_jitter AFTER DELETE ON recon_dirty FOR EACH STATEMENT EXECUTE FUNCTION stress_jitter('0.01');
"""
# Sessions of this test's database waiting for a lock, the lock, and who blocks them.
WAITS = """
SELECT a.application_name AS waiter, l.locktype, l.mode, l.classid::int8 AS classid, l.objid::int8 AS objid,
       l.relation::regclass::text AS rel,
       array(SELECT b.application_name FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid))) AS blockers
FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
"""
LEDGER = """
SELECT merchant_id, order_id, recon_status, business_date, received_amount, received_tip, channel_payment_ids,
       amount_at_risk, refunded_amount, fee, statement_status, statement_amount, statement_tip, statement_refund,
       statement_import_ids, statement_line_ids, statement_amount_at_risk
FROM ledger
"""


def role(application_name: str) -> str:
    return application_name.removeprefix("impstress-") if application_name.startswith("impstress-") else "?"


PREFIXES = {"order": "A", "orphan": "P", "stranger": "X"}
Key = tuple[str, str]


# ------------------------------------------------------------------------------------------------ the world


@dataclass(frozen=True)
class Line:
    """One statement line as written: `day` is the business date it means, `text` its txn_time cell."""

    line_no: int
    merchant_id: str
    order_id: str
    channel_id: str  # "" when the cell is empty
    amount: int
    tip: int
    fee: int
    refund: int
    day: date
    text: str

    @property
    def payment(self) -> tuple[str, str, str]:
        return (self.merchant_id, self.order_id, self.channel_id)

    @property
    def content(self) -> tuple[object, ...]:
        """What "stated identically" compares (STATEMENTS.md: the time as an instant, else the date)."""
        when: object = parse_finish_time(self.text, default_tz=TORONTO) or self.text
        return (*self.payment, self.amount, self.tip, self.fee, self.refund, when)

    def cells(self) -> str:
        return ",".join(
            [self.merchant_id, self.order_id, self.channel_id]
            + [str(v) for v in (self.amount, self.tip, self.fee, self.refund)]
            + [self.text]
        )


@dataclass(frozen=True)
class StatementFile:
    lines: tuple[Line, ...]
    given: tuple[date, date] | None  # the period passed to the import (--from/--to); None: from the lines
    declared: tuple[str, ...] = ()  # the merchants passed to the import (--merchant); none: those the lines name

    @property
    def text(self) -> str:
        return HEADER + "".join(line.cells() + "\n" for line in self.lines)

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def period(self) -> tuple[date, date]:
        return self.given or (min(line.day for line in self.lines), max(line.day for line in self.lines))

    @property
    def merchants(self) -> frozenset[str]:
        # STATEMENTS.md: the merchants given, else the merchants the lines name (a file without lines must name some).
        return frozenset(self.declared or (line.merchant_id for line in self.lines))

    def covers(self, merchant_id: str, day: date) -> bool:
        start, end = self.period
        return merchant_id in self.merchants and start <= day <= end


@dataclass
class KeyPlan:
    """One (merchant, order id): what it is and what the writers do to it."""

    key: Key
    role: str  # "order" (ours), "orphan" (paid, never ours), "stranger" (known from statements only)
    amount: int
    tip: int
    channel_id: str
    pay_at: datetime | None  # when the payment happened (None: never paid)
    late_order: bool = False  # the order is created during the round
    refund: tuple[int, datetime] | None = None  # a refund (amount, when it succeeded) once the order is paid
    writes: list[str] = field(default_factory=list)  # "callback" / "query", in order
    # What committed:
    order_created: bool = False
    callbacks: int = 0
    queries: int = 0
    refunded: int = 0

    @property
    def paid(self) -> bool:
        return self.callbacks + self.queries > 0

    @property
    def pay_day(self) -> date | None:
        return self.pay_at.astimezone(TORONTO).date() if self.pay_at else None


@dataclass
class ImportJob:
    file: StatementFile
    path: Path
    delay: float
    report: ImportReport | None = None
    refusal: StatementError | None = None  # what the import raised instead of a report
    began: float = 0.0  # time.monotonic() when import_statement was called, and when it returned
    ended: float = 0.0


# ------------------------------------------------------------------------------------------------ the reference


@dataclass(frozen=True)
class Row:
    """The ledger columns this test checks."""

    recon_status: str
    business_date: date
    received_amount: int | None
    received_tip: int | None
    refunded_amount: int
    channel_payment_ids: tuple[str, ...]
    amount_at_risk: int
    fee: int
    statement_status: str | None
    statement_amount: int | None
    statement_tip: int | None
    statement_refund: int | None
    statement_import_ids: tuple[int, ...]
    statement_line_ids: tuple[int, ...]
    statement_amount_at_risk: int


def outranks(a: tuple[int, StatementFile], b: tuple[int, StatementFile]) -> bool:
    """Later period end, or the same end and imported later (a larger id: ids follow the imports' commits)."""
    return (a[1].period[1], a[0]) > (b[1].period[1], b[0])


def current_lines(imported: dict[int, StatementFile]) -> list[tuple[int, Line]]:
    current = []
    for owner_id, owner in imported.items():
        for line in owner.lines:
            beaten = [
                other
                for other in imported.items()
                if outranks(other, (owner_id, owner))
                and (
                    other[1].covers(line.merchant_id, line.day)
                    or any(theirs.payment == line.payment for theirs in other[1].lines)
                )
            ]
            if not beaten:
                current.append((owner_id, line))
    return current


def refunded_through(plan: KeyPlan | None, lines: list[tuple[int, Line]], imported: dict[int, StatementFile]) -> int:
    """Our refunds through the statement: those whose business date is on or before the latest period end among
    the imports of the current lines (a statement's refund column can only know of refunds made by then)."""
    if plan is None or not plan.refunded or plan.refund is None:
        return 0
    latest = max(imported[import_id].period[1] for import_id, _ in lines)
    return plan.refunded if plan.refund[1].astimezone(TORONTO).date() <= latest else 0


def reference(
    plans: dict[Key, KeyPlan],
    imported: dict[int, StatementFile],
    line_ids: dict[tuple[int, int], int],
    created: dict[Key, datetime],
) -> dict[Key, Row]:
    by_key: dict[Key, list[tuple[int, Line]]] = defaultdict(list)
    for import_id, line in current_lines(imported):
        by_key[(line.merchant_id, line.order_id)].append((import_id, line))
    rows = {}
    for key in plans.keys() | by_key.keys():
        plan, lines = plans.get(key), sorted(by_key.get(key, []), key=lambda il: (il[0], il[1].line_no))
        ours = plan is not None and plan.order_created
        paid = plan is not None and plan.paid
        if not (ours or paid or lines):
            continue  # no evidence at all: no row
        received = (plan.amount, plan.tip) if plan is not None and paid else (None, None)
        # Business date: the payment's finish time, else the order's creation, else the earliest current line.
        if plan is not None and paid:
            assert plan.pay_day is not None
            day = plan.pay_day
        elif ours:
            day = created[key].astimezone(TORONTO).date()
        else:
            day = min(line.day for _, line in lines)
        ids = {line.channel_id for _, line in lines if line.channel_id}
        if plan is not None and paid:
            ids.add(plan.channel_id)
        channel_ids = tuple(sorted(ids))
        # Statement side.
        amount = sum(line.amount for _, line in lines) if lines else None
        tip = sum(line.tip for _, line in lines) if lines else None
        refund = sum(line.refund for _, line in lines) if lines else None
        seen: set[tuple[str, str, str]] = set()
        extra = 0
        for _, line in lines:
            if line.payment in seen:
                extra += line.amount + line.tip
            seen.add(line.payment)
        duplicates = len(seen) < len(lines)
        status: str | None
        if lines and not paid:
            status, st_risk = "not_in_ledger", 0 if not ours else (amount or 0) + (tip or 0)
        elif lines and duplicates:
            status, st_risk = "duplicate_settlement", extra
        elif lines and (amount, tip) != received:
            assert amount is not None and tip is not None and received[0] is not None and received[1] is not None
            status, st_risk = "amount_differs", abs(amount + tip - received[0] - received[1])
        elif lines and refund != (ours_through := refunded_through(plan, lines, imported)):
            status, st_risk = "refund_differs", abs((refund or 0) - ours_through)
        elif lines:
            status, st_risk = "matched", 0
        elif paid and any(f.covers(key[0], day) for f in imported.values()):
            assert plan is not None
            status, st_risk = "not_in_statement", plan.amount + plan.tip
        else:
            status, st_risk = None, 0
        # Order against gateway (only the rules this world can reach: amounts are paid exactly, nothing flagged).
        if not ours:
            recon, risk = (
                ("orphan_payment", plan.amount + plan.tip)
                if plan is not None and paid
                else ("not_in_ledger", (amount or 0) + (tip or 0))
                if lines
                else ("pending", 0)
            )
        else:
            assert plan is not None
            if len(channel_ids) > 1:
                recon, risk = "duplicate_payment", (len(channel_ids) - 1) * (plan.amount + plan.tip)
            elif paid:
                recon, risk = ("matched" if plan.callbacks else "missing_callback"), 0
            else:
                recon, risk = "pending", 0
        rows[key] = Row(
            recon_status=recon,
            business_date=day,
            received_amount=received[0],
            received_tip=received[1],
            refunded_amount=plan.refunded if plan is not None else 0,
            channel_payment_ids=channel_ids,
            amount_at_risk=risk,
            fee=sum(line.fee for _, line in lines),
            statement_status=status,
            statement_amount=amount,
            statement_tip=tip,
            statement_refund=refund,
            statement_import_ids=tuple(sorted({i for i, _ in lines})),
            statement_line_ids=tuple(sorted(line_ids[(i, line.line_no)] for i, line in lines)),
            statement_amount_at_risk=st_risk,
        )
    return rows


async def ledger_rows(conn: asyncpg.Connection) -> dict[Key, Row]:
    rows = {}
    for r in await conn.fetch(LEDGER):
        values = {name: r[name] for name in (f.name for f in fields(Row))}
        for name in ("channel_payment_ids", "statement_import_ids", "statement_line_ids"):
            values[name] = tuple(values[name])
        rows[(r["merchant_id"], r["order_id"])] = Row(**values)
    return rows


def differences(expected: dict[Key, Row], actual: dict[Key, Row]) -> dict[Key, list[str]]:
    found: dict[Key, list[str]] = {}
    for key in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(key), actual.get(key)
        if want == got:
            continue
        if want is None or got is None:
            found[key] = [f"reference {want}, ledger {got}"]
        else:
            found[key] = [
                f"{f.name}: reference {getattr(want, f.name)!r}, ledger {getattr(got, f.name)!r}"
                for f in fields(Row)
                if getattr(want, f.name) != getattr(got, f.name)
            ]
    return found


# ------------------------------------------------------------------------------------------------ planning


def plan_keys(rng: random.Random, number: int, days: list[date]) -> dict[Key, KeyPlan]:
    plans: dict[Key, KeyPlan] = {}
    serial = 0

    def add(role: str, merchant_id: str) -> KeyPlan:
        nonlocal serial
        serial += 1
        order_id = f"{PREFIXES[role]}{number:03d}{serial:05d}"
        paid_day = rng.choice(days) if role == "orphan" or (role == "order" and rng.random() < 0.7) else None
        pay_at = None
        if paid_day is not None:
            pay_at = datetime.combine(paid_day, clock(rng.randint(9, 20), rng.randint(0, 59)), TORONTO)
        plan = KeyPlan(
            key=(merchant_id, order_id),
            role=role,
            amount=rng.randint(100, 5000),
            tip=rng.choice((0, 0, rng.randint(1, 300))),
            channel_id=f"AL{number:03d}{serial:012d}",
            pay_at=pay_at,
            late_order=role == "order" and rng.random() < 0.3,
        )
        if pay_at is not None:
            kinds = ("callback",) if role == "orphan" else ("callback", "query", "callback")
            plan.writes = [rng.choice(kinds) for _ in range(rng.randint(1, 3))]
            if role == "order" and rng.random() < 0.35:
                when = min(pay_at + timedelta(days=rng.randint(0, 3), hours=rng.randint(0, 5)), datetime.now(TORONTO))
                plan.refund = (rng.randint(1, plan.amount + plan.tip), when)
        plans[plan.key] = plan
        return plan

    for merchant_id in MERCHANT_IDS:
        for _ in range(rng.randint(3, 6)):
            add("order", merchant_id)
        for _ in range(rng.randint(0, 1)):
            add("orphan", merchant_id)
        for _ in range(rng.randint(0, 2)):
            add("stranger", merchant_id)
    return plans


def line_for(rng: random.Random, plan: KeyPlan, start: date, end: date, given: bool) -> Line:
    span = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    day = plan.pay_day if plan.pay_day in span and rng.random() < 0.75 else rng.choice(span)
    assert day is not None
    channel = rng.choices((plan.channel_id, "", f"WX{rng.randrange(10**12):012d}"), (0.75, 0.12, 0.13))[0]
    amount = plan.amount if rng.random() < 0.8 else plan.amount + rng.randint(1, 99)
    tip = plan.tip if rng.random() < 0.9 else plan.tip + 1
    refund = 0
    if plan.refund is not None and plan.refund[1].astimezone(TORONTO).date() <= end:
        refund = plan.refund[0]  # the statement knows of our refund
    if rng.random() < 0.12:
        refund = rng.randint(1, plan.amount)
    return Line(0, *plan.key, channel, amount, tip, rng.randint(0, 40), refund, *txn_time(rng, day, start, given))


def txn_time(rng: random.Random, day: date, start: date, given: bool) -> tuple[date, str]:
    """(business date, txn_time cell): wall time in the business zone, a bare date, UTC (the Toronto evening of
    `day` is the next day in UTC) or, when the period is given, empty (the period's first day)."""
    style = rng.choice(("wall", "wall", "date", "utc", "empty" if given else "wall"))
    if style == "wall":
        return day, f"{day} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
    if style == "date":
        return day, f"{day}"
    if style == "utc":
        return day, f"{day + timedelta(days=1)}T02:{rng.randint(0, 59):02d}:00Z"
    return start, ""


def numbered(lines: list[Line]) -> tuple[Line, ...]:
    return tuple(Line(n, *[getattr(line, f.name) for f in fields(Line)][1:]) for n, line in enumerate(lines, start=2))


def new_file(rng: random.Random, plans: dict[Key, KeyPlan], days: list[date]) -> StatementFile:
    merchants = rng.choice(((MERCHANT,), (OTHER_MERCHANT,), MERCHANT_IDS))
    start = rng.choice(days)
    end = rng.choice([d for d in days if d >= start])
    given = rng.random() < 0.5
    candidates = [p for p in plans.values() if p.key[0] in merchants]
    count = 0 if given and rng.random() < 0.05 else rng.randint(1, 6)
    lines = [line_for(rng, rng.choice(candidates), start, end, given) for _ in range(count)]
    if lines and rng.random() < 0.15:  # OTT Pay settled one payment twice
        twice = rng.choice(lines)
        lines.insert(rng.randint(0, len(lines)), Line(**{**vars(twice), "fee": twice.fee + 1}))
    # A day without settlements is a file without lines; it must say whose day it was. Some files with lines
    # say it too.
    declared = merchants if not lines or rng.random() < 0.1 else ()
    return StatementFile(numbered(lines), (start, end) if given else None, declared)


def correction(rng: random.Random, base: StatementFile, plans: dict[Key, KeyPlan], days: list[date]) -> StatementFile:
    """A later statement of the same merchants: some lines dropped, changed or added; the same or a later end."""
    start, end = base.period
    end = rng.choice([d for d in days if d >= end])
    given = base.given is not None or rng.random() < 0.3
    lines = []
    for line in base.lines:
        if rng.random() < 0.25:
            continue
        if rng.random() < 0.3:
            line = line_for(rng, plans[(line.merchant_id, line.order_id)], start, end, given)
        lines.append(line)
    candidates = [p for p in plans.values() if p.key[0] in (base.merchants or MERCHANT_IDS)]
    while not lines or rng.random() < 0.3:
        lines.append(line_for(rng, rng.choice(candidates), start, end, given))
    rng.shuffle(lines)
    if not given:  # the period comes from the lines: every cell needs a date
        lines = [line if line.text else Line(**{**vars(line), "text": f"{line.day}"}) for line in lines]
    return StatementFile(numbered(lines), (start, end) if given else None)


# ------------------------------------------------------------------------------------------------ a round


@dataclass
class Stats:
    rounds: int = 0
    imports: int = 0
    refused_as_imported: int = 0
    same_bytes_other_span: int = 0  # files stored again for another period or other merchants (decision 0050)
    writes_committed: int = 0
    writes_rolled_back: int = 0
    reconcile_runs: int = 0
    stale_before_drain: int = 0
    superseded_lines: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    waits: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # "waiter on lock by blockers": polls


class Round:
    def __init__(
        self,
        number: int,
        rng: random.Random,
        pools: dict[str, asyncpg.Pool],
        admin: asyncpg.Connection,
        merchants: MerchantKeys,
        folder: Path,
        stats: Stats,
    ) -> None:
        self.number, self.rng, self.pools, self.admin = number, rng, pools, admin
        self.merchants, self.folder, self.stats = merchants, folder, stats
        self.history: list[str] = []
        self.reports: dict[int, ImportReport] = {}
        self.started = time.monotonic()

    def log(self, text: str) -> None:
        self.history.append(f"{time.monotonic() - self.started:6.3f} {text}")

    def fail(self, message: str) -> AssertionError:
        return AssertionError(
            "\n".join([f"seed {SEED}, round {self.number}: {message}", "history:", *self.history[-150:]])
        )

    async def run(self) -> None:
        rng = self.rng
        await self.admin.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        today = datetime.now(TORONTO).date()
        days = [today - timedelta(days=n) for n in range(4, -1, -1)]
        plans = plan_keys(rng, self.number, days)
        files: list[StatementFile] = []
        for _ in range(rng.randint(2, 5)):
            if files and rng.random() < 0.4:
                files.append(correction(rng, rng.choice(files), plans, days))
            else:
                files.append(new_file(rng, plans, days))
        jobs = []
        for n, statement in enumerate(files):
            path = self.folder / f"r{self.number}-f{n}.csv"
            path.write_text(statement.text, encoding="utf-8")
            jobs.append(ImportJob(statement, path, rng.uniform(0, 0.4)))
            if rng.random() < 0.3:  # the same path imported twice at once
                jobs.append(ImportJob(statement, path, rng.uniform(0, 0.4)))
            if rng.random() < 0.25:  # the same bytes under another name
                copy = self.folder / f"r{self.number}-f{n}-copy.csv"
                copy.write_bytes(path.read_bytes())
                jobs.append(ImportJob(statement, copy, rng.uniform(0, 0.4)))
        for n, statement in enumerate(files):
            given = f"given {statement.given[0]}..{statement.given[1]}" if statement.given else "from its lines"
            self.log(f"file f{n} ({given}, sha {statement.sha[:8]}):\n{statement.text.rstrip()}")
        for plan in plans.values():
            self.log(f"plan {plan.key} {plan.role} {plan.amount}+{plan.tip} {plan.channel_id} paid {plan.pay_at}"
                     f" writes {plan.writes} late {plan.late_order}")  # fmt: skip
        for plan in plans.values():
            if plan.role == "order" and not plan.late_order:
                await self.create_order(self.admin, plan)
        if rng.random() < 0.5:
            await reconcile_pending(self.pools["reconcile"], business_tz=TZ)
        stop = asyncio.Event()
        loops = [self.reconcile_loop(f"loop{i}", random.Random(rng.random()), stop) for i in range(rng.randint(1, 2))]
        looping = [asyncio.create_task(loop) for loop in loops]
        if rng.random() < 0.4:  # reconcilers stop before the rest: the stale check then has much to look at
            asyncio.get_running_loop().call_later(rng.uniform(0.05, 0.5), stop.set)
        work: list[Awaitable[None]] = [self.import_one(job) for job in jobs]
        work += [self.key_writer(plan, random.Random(rng.random())) for plan in plans.values()]
        watching = asyncio.Event()
        monitor = asyncio.create_task(self.monitor(watching))
        results = await asyncio.gather(*work, return_exceptions=True)
        stop.set()
        results += await asyncio.gather(*looping, return_exceptions=True)
        watching.set()
        results += await asyncio.gather(monitor, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise self.fail("a task failed:\n" + "\n".join("".join(traceback.format_exception(e)) for e in errors[:3]))

        imported = self.check_reports(jobs)
        line_ids = await self.check_stored(imported)
        created = {
            (r["merchant_id"], r["order_id"]): r["created_at"]
            for r in await self.admin.fetch("SELECT merchant_id, order_id, created_at FROM orders")
        }
        expected = reference(plans, imported, line_ids, created)
        self.stats.superseded_lines += sum(len(f.lines) for f in imported.values()) - len(current_lines(imported))
        # 3. At rest, before the drain: whatever differs must still be queued.
        queued = {(r["merchant_id"], r["order_id"]) for r in await self.admin.fetch("SELECT * FROM recon_dirty")}
        stale = differences(expected, await ledger_rows(self.admin))
        self.stats.stale_before_drain += len(stale)
        lost = {key: diff for key, diff in stale.items() if key not in queued}
        if lost:
            raise self.fail("stale with nothing queued:\n" + describe(lost))
        self.log(f"at rest: {len(stale)} stale key(s), all queued ({len(queued)} queued)")
        await reconcile_pending(self.pools["reconcile"], business_tz=TZ, concurrency=2)
        if left := await self.admin.fetchval("SELECT count(*) FROM recon_dirty"):
            raise self.fail(f"{left} change(s) still queued after the drain")
        actual = await ledger_rows(self.admin)
        if wrong := differences(expected, actual):
            raise self.fail("the ledger differs from the reference after the drain:\n" + describe(wrong))
        for row in actual.values():
            self.stats.statuses[str(row.statement_status)] += 1
        self.check_unchanged(imported)
        self.stats.rounds += 1

    # ---------------------------------------------------------------------------------------------- tasks

    async def import_one(self, job: ImportJob) -> None:
        await asyncio.sleep(job.delay)
        self.log(f"import {job.path.name} starts")
        job.began = time.monotonic()
        try:
            job.report = await import_statement(
                self.pools["import"],
                job.path,
                StatementLayout(),
                business_tz=TZ,
                period=job.file.given,
                merchants=job.file.declared,
            )
        except StatementError as exc:
            job.refusal = exc
            self.log(f"import {job.path.name} refused: {str(exc).splitlines()[0]}")
        else:
            self.log(f"import {job.path.name} ended: id {job.report.import_id}, already {job.report.already_imported}")
        job.ended = time.monotonic()

    async def key_writer(self, plan: KeyPlan, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(0, 0.4))
        steps = list(plan.writes)
        if plan.late_order:  # created before its first status query, after any callbacks before that
            first_query = steps.index("query") if "query" in steps else len(steps)
            steps.insert(rng.randint(0, first_query), "order")
        for kind in steps:
            await asyncio.sleep(rng.uniform(0, 0.08))
            if kind == "order":
                async with self.pools["write"].acquire() as conn:
                    await self.create_order(conn, plan)
                continue
            async with self.pools["write"].acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    if kind == "callback":
                        await self.callback(conn, plan)
                    else:
                        await self.query(conn, plan)
                    if rng.random() < 0.4:
                        await asyncio.sleep(rng.uniform(0, 0.04))  # held open while imports and batches run
                except BaseException:
                    await tx.rollback()
                    raise
                if rng.random() < 0.12:
                    await tx.rollback()
                    self.stats.writes_rolled_back += 1
                    self.log(f"{plan.key[1]}: {kind} rolled back")
                    continue
                await tx.commit()
            self.stats.writes_committed += 1
            if kind == "callback":
                plan.callbacks += 1
            else:
                plan.queries += 1
            self.log(f"{plan.key[1]}: {kind} committed")
        if plan.refund is not None and plan.paid and plan.order_created:
            await asyncio.sleep(rng.uniform(0, 0.08))
            async with self.pools["write"].acquire() as conn:
                async with conn.transaction():
                    await self.refund(conn, plan)
                    if rng.random() < 0.3:
                        await asyncio.sleep(rng.uniform(0, 0.04))
            plan.refunded = plan.refund[0]
            self.stats.writes_committed += 1
            self.log(f"{plan.key[1]}: refund {plan.refund[0]} at {plan.refund[1]} committed")

    async def reconcile_loop(self, name: str, rng: random.Random, stop: asyncio.Event) -> None:
        while not stop.is_set():
            report = await reconcile_pending(
                self.pools["reconcile"],
                business_tz=TZ,
                batch=rng.choice((1, 2, 3, 5, 100)),
                concurrency=rng.choice((1, 2)),
            )
            self.stats.reconcile_runs += 1
            if report.keys:
                self.log(f"{name}: {report.keys} key(s) reconciled")
            await asyncio.sleep(rng.uniform(0, 0.02))

    async def monitor(self, done: asyncio.Event) -> None:
        """Who waits for whom (decisions 0045, 0047): a writer never waits for an import or a reconciler, nobody
        waits for a writer but a writer, and an import waits only for the books lock, as does a batch for an
        import."""
        while not done.is_set():
            for r in await self.admin.fetch(WAITS):
                waiter, blockers = role(r["waiter"]), sorted({role(b) for b in r["blockers"]})
                books = (r["locktype"], r["classid"], r["objid"]) == ("advisory", BOOKS_LOCK[0], BOOKS_LOCK[1])
                lock = "books" if books else f"{r['locktype']} {r['mode']} {r['rel'] or ''}".strip()
                self.stats.waits[f"{waiter} on {lock} by {'+'.join(blockers)}"] += 1
                wrong = (
                    (waiter == "write" and blockers != ["write"])
                    or (waiter != "write" and "write" in blockers)
                    or (waiter == "import" and not books)
                    or (waiter == "reconcile" and "import" in blockers and not books)
                )
                if wrong:
                    raise self.fail(f"{waiter} waits for {blockers} on {lock}: {dict(r)}")
            await asyncio.sleep(0.01)

    # ---------------------------------------------------------------------------------------------- writes

    async def create_order(self, conn: Connection, plan: KeyPlan) -> None:
        merchant_id, order_id = plan.key
        args = (merchant_id, order_id, "ACTIVEPAY", "ALIPAY", plan.amount, plan.tip, None, None, order_id, "sha")
        assert await conn.fetchrow(payments_store.INSERT_ORDER, *args) is not None
        plan.order_created = True
        self.log(f"{order_id}: order created")

    async def callback(self, conn: Connection, plan: KeyPlan) -> None:
        """A signed SUCCESS callback, verified and recorded as the worker does (the same body each time)."""
        assert plan.pay_at is not None
        merchant_id, order_id = plan.key
        finish = f"{plan.pay_at.astimezone(BEIJING):%Y%m%d%H%M%S}"  # the gateway's own times: Beijing
        data = {"order_id": order_id, "amount": str(plan.amount), "tip": str(plan.tip), "merchant_id": merchant_id,
                "bizpay_order_id": plan.channel_id, "finish_time": finish}  # fmt: skip
        body = build_callback(data, merchant_id, self.merchants.keys_for(merchant_id)[-1])
        verdict = judge(body, datetime.now(UTC), self.merchants)
        assert isinstance(verdict, VerifiedCallback), verdict
        await callback_store.record_on(conn, [verdict], [])

    async def query(self, conn: Connection, plan: KeyPlan) -> None:
        """A status query answered paid: its attempt, the payment and the order's transition."""
        assert plan.pay_at is not None
        order_pk = await conn.fetchval("SELECT id FROM orders WHERE merchant_id = $1 AND order_id = $2", *plan.key)
        trade_time = f"{plan.pay_at.astimezone(BEIJING):%Y-%m-%d %H:%M:%S}"
        data = f'{{"bizpay_order_id": "{plan.channel_id}", "trade_time": "{trade_time}"}}'
        await conn.execute(payments_store.RECORD_ATTEMPT, order_pk, None, "STATUS_QUERY", "success", "SUCCESS", None,
                           None, True, "SUCCESS", False, datetime.now(UTC), 5, data)  # fmt: skip
        await conn.execute(payments_store.RECORD_PAYMENT, *plan.key, plan.amount, plan.tip, plan.channel_id,
                           trade_time, parse_finish_time(trade_time), "query")  # fmt: skip
        row = await fetch_one(conn, payments_store.LOAD_ORDER, order_pk)
        await payments_store.apply(conn, row, Transition("paid", "query", paid_amount=plan.amount), "query")

    async def refund(self, conn: Connection, plan: KeyPlan) -> None:
        """create_refund and the refunder's settlement of a SUCCESS, in one transaction, the order locked first."""
        assert plan.refund is not None
        amount, when = plan.refund
        order_pk = await conn.fetchval("SELECT id FROM orders WHERE merchant_id = $1 AND order_id = $2", *plan.key)
        await refund_store.lock_order_for_refund(conn, order_pk)
        refund_id = f"R{plan.key[1]}"
        row = await fetch_one(conn, refund_store.INSERT_REFUND, order_pk, plan.key[0], refund_id, amount, refund_id,
                              "sha")  # fmt: skip
        await refund_store.settle_refund(conn, row["id"], order_pk, "succeeded", None, None, when)

    # ---------------------------------------------------------------------------------------------- checks

    def check_reports(self, jobs: list[ImportJob]) -> dict[int, StatementFile]:
        """1. A file's bytes for one period and merchants (decision 0050) are stored by exactly one import; every
        other import of them says already imported."""
        by_span: dict[tuple[str, tuple[date, date], frozenset[str]], list[ImportJob]] = defaultdict(list)
        for job in jobs:
            by_span[(job.file.sha, job.file.period, job.file.merchants)].append(job)
        imported: dict[int, StatementFile] = {}
        for same in by_span.values():
            if refusals := [f"{job.path.name}: {job.refusal}" for job in same if job.refusal is not None]:
                raise self.fail(f"imports of valid files refused: {refusals}")
            reports = [job.report for job in same]
            stored = [r for r in reports if r is not None and r.import_id is not None]
            refused = [job for job in same if job.report is None or job.report.import_id is None]
            if len(stored) != 1:
                raise self.fail(f"{len(stored)} imports stored one file: {reports}")
            report = stored[0]
            # The bytes, the period and the merchants make an import the same (decision 0050): two header-only files
            # given different periods or merchants are two imports.
            statement = next(job.file for job in same if job.report is report)
            start, end = statement.period
            merchants = tuple(sorted(statement.merchants))
            repeated = len(statement.lines) - len({line.payment for line in statement.lines})
            want = (False, len(statement.lines), len(statement.lines), repeated, start, end, merchants)
            got = (report.already_imported, report.lines_read, report.lines_stored, report.repeated_payments,
                   report.period_start, report.period_end, report.merchant_ids)  # fmt: skip
            if got != want:
                raise self.fail(f"import report {report}, expected (already, read, stored, repeated, period,"
                                f" merchants) {want}")  # fmt: skip
            for job in refused:
                if job.report is None or not (job.report.already_imported and job.report.lines_stored == 0):
                    raise self.fail(f"an import of an imported file reported {job.report}")
            assert report.import_id is not None
            imported[report.import_id] = statement
            self.reports[report.import_id] = report
            self.stats.imports += 1
            self.stats.refused_as_imported += len(refused)
        self.stats.same_bytes_other_span += len(by_span) - len({sha for sha, _, _ in by_span})
        # "Imported later" is a larger id: an import that returned before another was called has the smaller id.
        storing = [job for job in jobs if job.report is not None and job.report.import_id is not None]
        for a in storing:
            for b in storing:
                assert a.report is not None and b.report is not None and a.report.import_id is not None
                if a.ended < b.began and not a.report.import_id < (b.report.import_id or 0):
                    raise self.fail(f"{a.path.name} (id {a.report.import_id}) returned before {b.path.name} began,"
                                    f" but has id {b.report.import_id}")  # fmt: skip
        return imported

    async def check_stored(self, imported: dict[int, StatementFile]) -> dict[tuple[int, int], int]:
        """Every stored import and line is one of the files' (nothing twice, nothing lost); returns the line ids."""
        imports = {r["id"]: r for r in await self.admin.fetch("SELECT * FROM statement_imports")}
        if set(imports) != set(imported):
            raise self.fail(f"stored imports {sorted(imports)}, reported {sorted(imported)}")
        for import_id, statement in imported.items():
            r = imports[import_id]
            got = (r["file_sha256"], r["period_start"], r["period_end"], sorted(r["merchant_ids"]), r["line_count"])
            want = (statement.sha, *statement.period, sorted(statement.merchants), len(statement.lines))
            if got != want:
                raise self.fail(f"import {import_id} stored as {got}, expected {want}")
        stored = await self.admin.fetch("SELECT * FROM statement_lines ORDER BY id")
        got_lines = sorted(
            (r["import_id"], r["line_no"], r["merchant_id"], r["order_id"], r["bizpay_order_id"] or "", r["amount"],
             r["tip"], r["fee"], r["refund"], r["business_date"], r["txn_time_raw"] or "")
            for r in stored
        )  # fmt: skip
        want_lines = sorted(
            (i, line.line_no, line.merchant_id, line.order_id, line.channel_id, line.amount, line.tip, line.fee,
             line.refund, line.day, line.text)
            for i, statement in imported.items() for line in statement.lines
        )  # fmt: skip
        if got_lines != want_lines:
            raise self.fail(f"stored lines\n{got_lines}\nexpected\n{want_lines}")
        return {(r["import_id"], r["line_no"]): r["id"] for r in stored}

    def check_unchanged(self, imported: dict[int, StatementFile]) -> None:
        """The reports' unchanged_lines: lines an earlier import stated identically. Imports hold the books one at
        a time and take their ids under it, so the earlier ones are those with smaller ids. Checked last: it is
        informational, the ledger matters more."""
        for import_id, statement in imported.items():
            earlier = {line.content for i, f in imported.items() if i < import_id for line in f.lines}
            want_unchanged = sum(line.content in earlier for line in statement.lines)
            if (got_unchanged := self.reports[import_id].unchanged_lines) != want_unchanged:
                raise self.fail(
                    f"import {import_id}: {got_unchanged} unchanged lines reported, expected {want_unchanged}"
                )


def describe(found: dict[Key, list[str]]) -> str:
    return "\n".join(f"  {key}: " + "; ".join(diff) for key, diff in found.items())


# ------------------------------------------------------------------------------------------------ the test


@pytest.fixture
async def pools(database_url: str, db: asyncpg.Connection) -> AsyncIterator[dict[str, asyncpg.Pool]]:
    await db.execute(JITTER)
    # A wait nobody resolves fails the test (lock_timeout) instead of hanging it.
    settings = {"statement_timeout": "15000", "lock_timeout": "10000"}
    made: dict[str, asyncpg.Pool] = {}
    try:
        for name, size in (("import", 8), ("write", 4), ("reconcile", 4)):
            made[name] = await asyncpg.create_pool(
                database_url, min_size=1, max_size=size,
                server_settings={**settings, "application_name": f"impstress-{name}"},
            )  # fmt: skip
        yield made
    finally:
        for pool in made.values():
            try:
                await asyncio.wait_for(pool.close(), 10)
            except TimeoutError:
                pool.terminate()


async def test_imports_racing_imports_reconcilers_and_writers_match_the_reference(
    pools: dict[str, asyncpg.Pool], db: asyncpg.Connection, merchants: MerchantKeys, tmp_path: Path
) -> None:
    stats = Stats()
    started = time.monotonic()
    for number in range(ROUNDS):
        rng = random.Random(f"{SEED}-{number}")
        folder = tmp_path / f"round{number}"
        folder.mkdir()
        await Round(number, rng, pools, db, merchants, folder, stats).run()
    print(f"\nseed {SEED}: {stats} in {time.monotonic() - started:.1f} s")
    # The generator must reach what the claims are about.
    assert stats.refused_as_imported > 0 or ROUNDS < 4, stats
    assert stats.superseded_lines > 0 or ROUNDS < 4, stats
