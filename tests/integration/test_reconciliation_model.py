"""Random histories through the real code paths on real Postgres, checked against the reference model.

Orders are stored by the api's create_payment and carried to the OTT Pay simulator by the worker's
submitter; customers pay, or walk away, at the simulator; callbacks are built as OTT Pay builds them,
signed for real, verified by ottrecon.callbacks.verify.judge and recorded by ottrecon.callbacks.store.record
(duplicates, reordering, wrong amounts, another channel id, orphans, every finish_time form PROTOCOL.md shows);
sweeps query the gateway, impatient ones flag orders unpaid; refunds go through the api's
create_refund and the worker's refunder; settlement statements are written here, independently of
the code under test, and imported with ottrecon.reconciliation.statements.import_statement (missing, extra, differing,
refunded, duplicated, moved and superseding lines; the same file again). After each reconciliation
the ledger, the daily summary and the open alerts must equal tests/reconciliation_model.py's, cent
for cent. What the model is given is the truth as this test made it (the instants it rendered, the
amounts it sent, the lines it wrote), not the system's reading of it; order states, which the
submission state machine decides, are read back from the orders table.

Bounded for `make test`; `make soak` raises OTTRECON_MODEL_EXAMPLES / OTTRECON_MODEL_STEPS.
"""

from __future__ import annotations

import csv
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from ottpay.envelope import build_callback
from ottpay.keys import MerchantKeys
from ottrecon.callbacks import store as callback_store
from ottrecon.callbacks.verdicts import VerifiedCallback
from ottrecon.callbacks.verify import judge
from ottrecon.db import fetch_one
from ottrecon.payments.intake import PaymentRequest, create_payment, create_refund
from ottrecon.reconciliation import closing
from ottrecon.reconciliation.layouts import StatementLayout
from ottrecon.reconciliation.reconcile import reconcile_pending
from ottrecon.reconciliation.statements import import_statement
from tests import books_model
from tests import reconciliation_model as model
from tests.conftest import MERCHANT, OTHER_MERCHANT
from tests.integration.model_world import BUSINESS_TZ, World, assert_matches_model, run_histories, scaled, world

TORONTO = ZoneInfo(BUSINESS_TZ)
BEIJING = ZoneInfo("Asia/Shanghai")
CENTRAL = timezone(timedelta(hours=-6), "CST")
MERCHANT_IDS = (MERCHANT, OTHER_MERCHANT)
CHANNELS = {"ALIPAY": "AL", "WECHATPAY": "WX", "UNIONPAY": "UP"}
GATEWAY_PAID = ("success", "partial_refunded", "fully_refunded")
EXAMPLES = scaled("OTTRECON_MODEL_EXAMPLES", 75)
STEPS = scaled("OTTRECON_MODEL_STEPS", 40)

# How OTT Pay may write one instant as finish_time (PROTOCOL.md section 4), and how a statement may.
FINISH_FORMS = ("compact_beijing", "compact_beijing", "dashed_beijing", "central_cst", "eastern", "offset", "garbage")
LINE_FORMS = ("toronto", "toronto", "toronto_compact", "eastern", "central_cst", "offset")
CALLBACK_VARIANTS = ("as_sent", "as_sent", "other_form")
ODD_CALLBACKS = ("wrong_amount", "wrong_amount", "other_channel")
LINE_VARIANTS = ("exact",) * 3 + ("omit", "amount") + ("refund", "duplicate") * 2 + ("moved", "no_channel")


def render(instant: datetime, form: str) -> str:
    """An instant written the way `form` says; the test keeps the instant as the truth."""
    toronto = instant.astimezone(TORONTO)
    return {
        "compact_beijing": f"{instant.astimezone(BEIJING):%Y%m%d%H%M%S}",
        "dashed_beijing": f"{instant.astimezone(BEIJING):%Y-%m-%d %H:%M:%S}",
        "central_cst": f"{instant.astimezone(CENTRAL):%Y-%m-%d %H:%M:%S} CST",
        "eastern": f"{toronto:%Y-%m-%d %H:%M:%S} {toronto.tzname()}",
        "offset": f"{instant.astimezone(BEIJING):%Y-%m-%dT%H:%M:%S}+08:00",
        "toronto": f"{toronto:%Y-%m-%d %H:%M:%S}",
        "toronto_compact": f"{toronto:%Y%m%d%H%M%S}",
        "garbage": "soon",
    }[form]


def gateway_instant(text: str | None) -> datetime:
    """The simulator's trade_time / refund_time: compact Beijing wall time (PROTOCOL.md section 4)."""
    assert text is not None, "the gateway gave no time"
    return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)


@dataclass
class Ours:
    """An order this system created."""

    key: model.Key
    pk: int
    kind: str
    channel: str
    amount: int
    tip: int
    status: str = "pending"


@dataclass
class Line:
    merchant_id: str
    order_id: str
    channel_id: str | None
    amount: int
    tip: int
    fee: int
    refund: int
    instant: datetime
    form: str


class LedgerHistories(RuleBasedStateMachine):
    """One random history per example; the world (Postgres, simulator, worker parts) is shared."""

    world: World
    directory: Path
    examples = 0
    steps = 0
    # Every ledger status the compared rows reached, to show what a run covered.
    reached: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        self.w = type(self).world
        type(self).examples += 1
        self.n = 0
        self.history: list[str] = []
        self.ours: list[Ours] = []
        self.orphans: dict[model.Key, tuple[int, int, str]] = {}
        self.evidence = model.Evidence()
        self.payments: dict[model.Key, tuple[int, int, str | None, datetime | None, str]] = {}
        self.seen: set[tuple[str, str]] = set()
        self.bodies: list[tuple[model.Key, dict[str, str], model.Callback, datetime | None]] = []
        self.files: list[tuple[Path, tuple[date, date] | None, tuple[str, ...]]] = []
        # Each import stored: the file's bytes with its period and merchants (decision 0050: imported once).
        self.stored_spans: set[tuple[bytes, date, date, frozenset[str]]] = set()
        self.failed = False
        # Closing the books: the model's books, and each closed (date, scope)'s summary rows as exported at close.
        self.books = books_model.Books()
        self.frozen: dict[tuple[date, str | None], list[tuple[str, ...]]] = {}
        self.ledger: dict[model.Key, model.LedgerRow] = {}
        self.summary: list[tuple[str, ...]] = []
        self.contributions: dict[books_model.Place, books_model.Figures] = {}
        self.lines: dict[model.Key, books_model.LineIds] = {}
        self.counted: Counter[str] = Counter()

    # ----------------------------------------------------------------------------------- plumbing

    def step(self, text: str) -> None:
        type(self).steps += 1
        self.history.append(f"[{self.w.now:%Y-%m-%d %H:%M:%S}Z] {text}")

    def next_id(self) -> int:
        self.n += 1
        return self.n

    def sim_order(self, key: model.Key) -> Any:
        return self.w.sim.state.orders.get(key)

    def refresh(self, order: Ours) -> None:
        order.status = self.w.run(self._status(order.pk))

    async def _status(self, pk: int) -> str:
        async with self.w.pool.acquire() as conn:
            status: str = await conn.fetchval("SELECT status FROM orders WHERE id = $1", pk)
        return status

    def first_report(
        self, key: model.Key, amount: int, tip: int, channel: str | None, finish: datetime | None, source: str
    ) -> None:
        self.payments.setdefault(key, (amount, tip, channel, finish, source))

    def paid_at_gateway(self) -> list[model.Key]:
        return [o.key for o in self.ours if (s := self.sim_order(o.key)) is not None and s.status in GATEWAY_PAID]

    def waiting_at_gateway(self) -> list[Ours]:
        return [o for o in self.ours if o.kind == "ACTIVEPAY" and (s := self.sim_order(o.key)) and s.status == "notpay"]

    def swept(self) -> list[Ours]:
        return [o for o in self.ours if o.kind == "ACTIVEPAY" and o.status in ("awaiting_payment", "unpaid")]

    def refundable(self) -> list[tuple[Ours, int]]:
        found = []
        for order in self.ours:
            if order.status not in ("paid", "partially_refunded"):
                continue
            gateway = self.sim_order(order.key)
            paid = self.payments.get(order.key)
            if gateway is None or gateway.status not in GATEWAY_PAID or paid is None:
                continue
            refunded = sum(r.amount for r in self.evidence.refunds.get(order.key, []))
            ours_left = self.w.run(self._paid(order.pk)) - refunded
            left = min(ours_left, gateway.total - gateway.refunded)
            if left > 0:
                found.append((order, left))
        return found

    async def _paid(self, pk: int) -> int:
        async with self.w.pool.acquire() as conn:
            row = await fetch_one(
                conn, "SELECT coalesce(paid_amount, amount) + tip AS paid FROM orders WHERE id = $1", pk
            )
        return int(row["paid"])

    # ----------------------------------------------------------------------------------- rules

    @initialize(start=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31)))
    def begin(self, start: datetime) -> None:
        self.w.reset(start.replace(microsecond=0, tzinfo=UTC))
        self.step("start")

    @rule(minutes=st.integers(1, 36 * 60))
    def time_passes(self, minutes: int) -> None:
        self.w.now += timedelta(minutes=minutes)
        self.step(f"{minutes} min pass")

    @rule(
        kind=st.sampled_from(("ACTIVEPAY", "ACTIVEPAY", "PASSIVEPAY")),
        channel=st.sampled_from(tuple(CHANNELS)),
        amount=st.integers(1, 5000),
        tip=st.sampled_from((0, 0, 0, 50, 125)),
        merchant_id=st.sampled_from(MERCHANT_IDS),
        declined=st.integers(0, 4),
    )
    def take_payment(self, kind: str, channel: str, amount: int, tip: int, merchant_id: str, declined: int) -> None:
        n = self.next_id()
        code = f"28{n:012d}" + ("0000" if declined == 0 else "1357") if kind == "PASSIVEPAY" else None
        request = PaymentRequest(merchant_id, kind, channel, amount, tip, code, None)
        row, _ = self.w.run(create_payment(self.w.pool, self.w.redis, request, f"pay-{n}"))
        order = Ours((merchant_id, row["order_id"]), row["id"], kind, channel, amount, tip)
        self.ours.append(order)
        self.w.run(self.w.patient.process(order.pk))
        self.refresh(order)
        gateway = self.sim_order(order.key)
        if kind == "PASSIVEPAY" and gateway.status == "success":
            # The PASSIVEPAY answer proves the payment: the first report, at the gateway's trade_time.
            instant = gateway_instant(gateway.trade_time)
            self.first_report(order.key, amount, tip, gateway.bizpay_order_id, instant, "response")
        self.step(f"take {kind} {channel} {amount}+{tip} for {order.key} -> {order.status}")

    @precondition(lambda self: self.waiting_at_gateway())
    @rule(data=st.data(), pays=st.booleans())
    def customer_decides(self, data: st.DataObject, pays: bool) -> None:
        order = data.draw(st.sampled_from(self.waiting_at_gateway()))
        change = self.w.sim.gateway.pay_now if pays else self.w.sim.gateway.close
        self.w.run(_call(change, *order.key))
        self.step(f"customer {'pays' if pays else 'walks away from'} {order.key}")

    @precondition(lambda self: self.paid_at_gateway())
    @rule(
        data=st.data(),
        variant=st.sampled_from(CALLBACK_VARIANTS),
        form=st.sampled_from(FINISH_FORMS),
        delay_s=st.integers(0, 3 * 3600),
    )
    def callback_arrives(self, data: st.DataObject, variant: str, form: str, delay_s: int) -> None:
        self.callback_for(data, variant, form, delay_s)

    # Callbacks that should not happen, but do: another amount, another channel payment for the same order.
    @precondition(lambda self: self.paid_at_gateway())
    @rule(data=st.data(), variant=st.sampled_from(ODD_CALLBACKS), delay_s=st.integers(0, 3600))
    def odd_callback_arrives(self, data: st.DataObject, variant: str, delay_s: int) -> None:
        self.callback_for(data, variant, "compact_beijing", delay_s)

    def callback_for(self, data: st.DataObject, variant: str, form: str, delay_s: int) -> None:
        key = data.draw(st.sampled_from(self.paid_at_gateway()))
        gateway = self.sim_order(key)
        instant = gateway_instant(gateway.trade_time)
        amount, channel_id, text = gateway.amount, gateway.bizpay_order_id, gateway.trade_time
        if variant == "wrong_amount":
            amount += data.draw(st.integers(1, 300))
        if variant == "other_channel":
            channel_id = f"{channel_id[:2]}9{self.next_id():014d}"
        if variant == "other_form":
            text = render(instant, form)
        fields = {"order_id": key[1], "amount": str(amount), "tip": str(gateway.tip), "bizpay_order_id": channel_id,
                  "merchant_id": key[0], "finish_time": text}  # fmt: skip
        finish = None if text == "soon" else instant
        self.deliver(key, fields, amount, gateway.tip, channel_id, finish, delay_s, variant)

    @rule(
        merchant_id=st.sampled_from(MERCHANT_IDS),
        amount=st.integers(1, 5000),
        prefix=st.sampled_from(tuple(CHANNELS.values())),
        form=st.sampled_from(FINISH_FORMS),
        ago_s=st.integers(0, 2 * 86400),
    )
    def orphan_callback_arrives(self, merchant_id: str, amount: int, prefix: str, form: str, ago_s: int) -> None:
        n = self.next_id()
        key, channel_id, instant = (
            (merchant_id, f"X{n:011d}"),
            f"{prefix}{n:015d}",
            self.w.now - timedelta(seconds=ago_s),
        )
        text = render(instant, form)
        self.orphans[key] = (amount, 0, channel_id)
        fields = {"order_id": key[1], "amount": str(amount), "tip": "0", "bizpay_order_id": channel_id,
                  "merchant_id": merchant_id, "finish_time": text}  # fmt: skip
        self.deliver(key, fields, amount, 0, channel_id, None if text == "soon" else instant, 0, "orphan")

    @precondition(lambda self: self.bodies)
    @rule(data=st.data(), delay_s=st.integers(0, 86400))
    def callback_is_redelivered(self, data: st.DataObject, delay_s: int) -> None:
        key, body, callback, finish = data.draw(st.sampled_from(self.bodies))
        self.record(key, body, callback, finish, self.w.now + timedelta(seconds=delay_s), "redelivered")

    def deliver(
        self,
        key: model.Key,
        fields: dict[str, str],
        amount: int,
        tip: int,
        channel_id: str | None,
        finish: datetime | None,
        delay_s: int,
        what: str,
    ) -> None:
        body = build_callback(fields, key[0], self.w.merchants.keys_for(key[0])[-1])
        received_at = self.w.now + timedelta(seconds=delay_s)
        callback = model.Callback(amount, tip, channel_id, received_at)
        self.bodies.append((key, body, callback, finish))
        self.record(key, body, callback, finish, received_at, what)

    def record(
        self,
        key: model.Key,
        body: dict[str, str],
        callback: model.Callback,
        finish: datetime | None,
        received_at: datetime,
        what: str,
    ) -> None:
        verdict = judge(body, received_at, self.w.merchants)
        assert isinstance(verdict, VerifiedCallback), verdict
        new = self.w.run(callback_store.record(self.w.pool, [verdict], []))
        fresh = (key[0], body["md5"]) not in self.seen
        assert bool(new) == fresh, f"recorded {new} for a {'new' if fresh else 'repeated'} body"
        if fresh:
            self.seen.add((key[0], body["md5"]))
            self.evidence.callbacks[key].append(model.Callback(callback.amount, callback.tip, callback.channel_id,
                                                               received_at))  # fmt: skip
            self.first_report(key, callback.amount, callback.tip, callback.channel_id, finish, "callback")
        for order in self.ours:
            if order.key == key:
                self.refresh(order)
        self.step(f"callback {what} {key} {callback.amount}+{callback.tip} {callback.channel_id} "
                  f"finish={body and finish} new={fresh}")  # fmt: skip

    @precondition(lambda self: self.swept())
    @rule(data=st.data(), impatient=st.booleans())
    def sweep_queries(self, data: st.DataObject, impatient: bool) -> None:
        order = data.draw(st.sampled_from(self.swept()))
        # Plumbing: make the order due now, as the sweep's schedule would after sweep_after_s.
        self.w.run(self.w.pool.execute("UPDATE orders SET next_check_at = now() WHERE id = $1", order.pk))
        submitter = self.w.impatient if impatient else self.w.patient
        self.w.run(submitter.process(order.pk))
        gateway = self.sim_order(order.key)
        if gateway.status in GATEWAY_PAID:
            instant = gateway_instant(gateway.trade_time)
            self.first_report(order.key, gateway.amount, gateway.tip, gateway.bizpay_order_id, instant, "query")
        self.refresh(order)
        self.step(f"{'impatient ' if impatient else ''}query {order.key} -> {order.status}")

    @precondition(lambda self: self.refundable())
    @rule(data=st.data(), share=st.integers(1, 100))
    def refund(self, data: st.DataObject, share: int) -> None:
        order, left = data.draw(st.sampled_from(self.refundable()))
        amount = max(1, left * share // 100)
        row, _ = self.w.run(create_refund(self.w.pool, self.w.redis, order.key[1], amount, f"refund-{self.next_id()}"))
        result = self.w.run(self.w.refunder.process(row["id"]))
        assert result is not None and result.status == "succeeded", result
        # The gateway's refund_time is the sim clock's now, in Beijing wall time.
        self.evidence.refunds[order.key].append(model.Refund(row["refund_order_id"], amount, self.w.now))
        self.refresh(order)
        self.step(f"refund {amount} of {order.key} -> {order.status}")

    @rule(data=st.data())
    def statement_arrives(self, data: st.DataObject) -> None:
        today = self.w.now.astimezone(TORONTO).date()
        start = today + timedelta(days=data.draw(st.integers(-3, 0)))
        end = start + timedelta(days=data.draw(st.integers(0, 3)))
        self.statement_for(data, start, end)

    # The usual case: yesterday's (or today's) daily statement, listing the day's payments.
    @precondition(lambda self: self.paid_at_gateway())
    @rule(data=st.data(), yesterday=st.booleans())
    def daily_statement_arrives(self, data: st.DataObject, yesterday: bool) -> None:
        day = self.w.now.astimezone(TORONTO).date() - timedelta(days=int(yesterday))
        self.statement_for(data, day, day)

    def statement_for(self, data: st.DataObject, start: date, end: date) -> None:
        lines: list[Line] = []
        for gateway in sorted(self.w.sim.state.orders.values(), key=lambda o: (o.trade_time or "", o.order_id)):
            if gateway.status not in GATEWAY_PAID:
                continue
            instant = gateway_instant(gateway.trade_time)
            if not start <= instant.astimezone(TORONTO).date() <= end:
                continue
            variant = data.draw(st.sampled_from(LINE_VARIANTS))
            if variant == "omit":
                continue
            refunded = sum(
                r.amount for r in gateway.refunds if gateway_instant(r.refund_time).astimezone(TORONTO).date() <= end
            )
            amount, refund, channel_id = gateway.amount, refunded, gateway.bizpay_order_id
            if variant == "amount":
                amount += data.draw(st.integers(1, 100))
            if variant == "refund":
                refund += data.draw(st.integers(1, 100))
            if variant == "no_channel":
                channel_id = None
            if variant == "moved":
                instant = _moved(instant, start, end, data.draw(st.integers(0, 86400 * 4)))
            form = data.draw(st.sampled_from(LINE_FORMS))
            line = Line(gateway.merchant_id, gateway.order_id, channel_id, amount, gateway.tip,
                        (amount + gateway.tip) * 2 // 100, refund, instant, form)  # fmt: skip
            lines += [line, line] if variant == "duplicate" else [line]
        for _ in range(data.draw(st.integers(0, 2))):
            lines.append(self.extra_line(data, start, end))
        if not lines and not data.draw(st.booleans()):
            return
        give_period = not lines or data.draw(st.booleans())
        # A day without settlements is a file without lines, which must say whose day it was.
        declared = () if lines else data.draw(st.sampled_from([(MERCHANT,), (OTHER_MERCHANT,), MERCHANT_IDS]))
        self.import_file(lines, (start, end) if give_period else None, declared)

    def extra_line(self, data: st.DataObject, start: date, end: date) -> Line:
        """A line for a payment we never saw: an unknown order, one of ours unpaid, or an orphan."""
        day = start + timedelta(days=data.draw(st.integers(0, (end - start).days)))
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=TORONTO)
        instant = noon + timedelta(minutes=data.draw(st.integers(-11 * 60, 11 * 60)))
        choices = ["unknown", *(["ours"] if self.ours else []), *(["orphan"] if self.orphans else [])]
        kind = data.draw(st.sampled_from(choices))
        n = self.next_id()
        if kind == "ours":
            order = data.draw(st.sampled_from(self.ours))
            return Line(*order.key, f"AL{n:015d}", order.amount, order.tip, 9, 0, instant, "toronto")
        if kind == "orphan":
            key = data.draw(st.sampled_from(sorted(self.orphans)))
            amount, tip, channel_id = self.orphans[key]
            return Line(*key, channel_id, amount, tip, 3, 0, instant, "toronto")
        merchant_id = data.draw(st.sampled_from(MERCHANT_IDS))
        return Line(
            merchant_id, f"S{n:011d}", f"WX{n:015d}", data.draw(st.integers(1, 9000)), 0, 7, 0, instant, "offset"
        )

    def import_file(self, lines: list[Line], period: tuple[date, date] | None, declared: tuple[str, ...]) -> None:
        path = type(self).directory / f"statement-{type(self).examples}-{self.next_id()}.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(
                ["merchant_id", "order_id", "bizpay_order_id", "amount", "tip", "fee", "refund", "txn_time"]
            )
            for line in lines:
                writer.writerow([line.merchant_id, line.order_id, line.channel_id or "", line.amount, line.tip,
                                 line.fee, line.refund, render(line.instant, line.form)])  # fmt: skip
        days = [line.instant.astimezone(TORONTO).date() for line in lines]
        start, end = period or (min(days), max(days))
        identity = (path.read_bytes(), start, end, frozenset(declared) or frozenset(x.merchant_id for x in lines))
        report = self.w.run(
            import_statement(
                self.w.pool, path, StatementLayout(), business_tz=BUSINESS_TZ, period=period, merchants=declared
            )
        )
        assert (report.period_start, report.period_end) == (start, end)
        assert report.already_imported == (identity in self.stored_spans), report
        if report.already_imported:  # the very same bytes as an earlier file, for the same period and merchants
            self.step(f"statement {path.name}: already imported")
            return
        self.stored_spans.add(identity)
        assert report.import_id is not None and report.lines_stored == len(lines)
        stated = tuple(
            model.StatementLine(
                line.merchant_id,
                line.order_id,
                line.channel_id,
                line.amount,
                line.tip,
                line.fee,
                line.refund,
                day,
                number,
            )
            for number, (line, day) in enumerate(zip(lines, days, strict=True), start=2)
        )
        self.evidence.imports.append(model.StatementImport(report.import_id, start, end, stated, frozenset(declared)))
        self.files.append((path, period, declared))
        said = [
            f"{x.order_id} {x.channel_id} {x.amount}+{x.tip} r{x.refund} {render(x.instant, x.form)}" for x in lines
        ]
        self.step(f"statement #{report.import_id} {start}..{end}: " + "; ".join(said))

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def statement_imported_again(self, data: st.DataObject) -> None:
        path, period, declared = data.draw(st.sampled_from(self.files))
        copy = path.with_name(f"again-{self.next_id()}-{path.name}")
        copy.write_bytes(path.read_bytes())
        imported = import_statement(
            self.w.pool, copy, StatementLayout(), business_tz=BUSINESS_TZ, period=period, merchants=declared
        )
        report = self.w.run(imported)
        assert report.already_imported and report.import_id is None
        self.step(f"statement {path.name} imported again: recognised")

    @rule(
        back=st.integers(1, 4),
        span=st.integers(0, 2),
        scope=st.sampled_from((None, None, *MERCHANT_IDS)),
        force=st.booleans(),
    )
    def close_books(self, back: int, span: int, scope: str | None, force: bool) -> None:
        self.reconcile()  # finance closes what the worker has reconciled
        today = self.w.now.astimezone(TORONTO).date()
        first, last = today - timedelta(days=back + span), today - timedelta(days=back)
        days = closing.dates(first, last)
        refusal: str | None = None
        try:
            open_days = {
                self.ledger[(m, o)].business_date
                for (_, m, o) in model.wanted_alerts(self.ledger)
                if scope in (None, m)
            }
            model_books = books_model.Books(set(self.books.closes), list(self.books.entries), set(self.books.folded))
            closed_now = model_books.close(days, scope, self.contributions, self.lines)
            if not force and open_days & set(closed_now):
                refusal = "unacknowledged"
        except books_model.Refused:
            refusal, closed_now = "separately", []
        try:
            report = self.w.run(
                closing.close_dates(self.w.pool, first, last, merchant_id=scope, note="model", actor="model",
                                    today=today, force_reason="model forces" if force else None)
            )  # fmt: skip
            outcome = None
        except closing.UnacknowledgedMismatches:
            outcome = "unacknowledged"
        except closing.ClosingError as exc:
            assert "closed separately" in str(exc), exc
            outcome = "separately"
        self.step(f"close {first}..{last} for {scope or 'every merchant'}{' (forced)' if force else ''} -> {outcome}")
        type(self).reached.update([f"close:{outcome or 'closed'}"])
        assert outcome == refusal, f"the model expected {refusal}, the system said {outcome}"
        if outcome is None:
            assert report.closed == closed_now, (report.closed, closed_now)
            self.books = model_books
            self.w.run(self.check())
            for day in closed_now:
                self.frozen[(day, scope)] = _rows_of(self.summary, day, scope)

    @precondition(lambda self: self.books.closes)
    @rule(data=st.data())
    def reopen_books(self, data: st.DataObject) -> None:
        day, scope = data.draw(st.sampled_from(sorted(self.books.closes, key=lambda c: (c[0], c[1] or ""))))
        try:
            self.books.reopen(day, scope)
            expected = None
        except books_model.Refused:
            expected = "blocked"
        try:
            self.w.run(closing.reopen_date(self.w.pool, day, merchant_id=scope, reason="model", actor="model"))
            outcome = None
        except closing.ReopenBlocked:
            outcome = "blocked"
        self.step(f"reopen {day} for {scope or 'every merchant'} -> {outcome}")
        type(self).reached.update([f"reopen:{outcome or 'reopened'}"])
        assert outcome == expected, f"the model expected {expected}, the system said {outcome}"
        if outcome is None:
            del self.frozen[(day, scope)]

    @rule()
    def reconcile(self) -> None:
        self.w.run(reconcile_pending(self.w.pool, business_tz=BUSINESS_TZ))
        self.step("reconcile")
        self.w.run(self.check())

    def teardown(self) -> None:
        if not self.failed:  # a failed check already said what is wrong; do not say it twice
            self.reconcile()

    async def check(self) -> None:
        evidence = model.Evidence(
            orders=self.evidence.orders,
            callbacks=self.evidence.callbacks,
            refunds=self.evidence.refunds,
            imports=self.evidence.imports,
        )
        async with self.w.pool.acquire() as conn:
            from tests.integration.model_world import answer_ids_from_db, orders_from_db

            evidence.orders = await orders_from_db(conn)
            evidence.answer_channel_ids.update(await answer_ids_from_db(conn))
            stored = {(r["merchant_id"], r["order_id"]): r for r in await conn.fetch("SELECT * FROM payments")}
        assert set(stored) == set(self.payments), (sorted(stored), sorted(self.payments))
        for key, (amount, tip, channel_id, finish, source) in self.payments.items():
            row = stored[key]
            # The payment row is the first report, as this test made it.
            assert (row["amount"], row["tip"], row["bizpay_order_id"], row["source"]) == (
                amount,
                tip,
                channel_id,
                source,
            )
            evidence.payments[key] = model.Payment(amount, tip, channel_id, finish, source, row["created_at"])
        self.failed = True
        self.summary = await assert_matches_model(self.w.pool, evidence, self.history, self.books)
        self.ledger = model.reconcile(evidence, BUSINESS_TZ)
        self.contributions = books_model.contributions(self.ledger, model.refund_bookings(evidence, BUSINESS_TZ))
        self.lines = books_model.line_ids(evidence)
        for (day, scope), rows in self.frozen.items():
            # The invariant itself: a closed date's summary is byte for byte what it was when it was closed.
            assert _rows_of(self.summary, day, scope) == rows, (day, scope, rows, self.history[-30:])
        self.failed = False
        for ledger_row in model.reconcile(evidence, BUSINESS_TZ).values():
            type(self).reached.update([ledger_row.recon_status, f"statement:{ledger_row.statement_status}"])
        adjustments = Counter(f"adjustment:{e.reason}" for e in self.books.entries if e.kind == "adjustment")
        type(self).reached.update(adjustments - self.counted)
        self.counted = adjustments


def _rows_of(summary: list[tuple[str, ...]], day: date, scope: str | None) -> list[tuple[str, ...]]:
    """The summary's rows of one date, for one merchant or (None) every merchant."""
    return [row for row in summary if row[0] == str(day) and scope in (None, row[1])]


async def _call(change: Any, *args: Any) -> None:
    change(*args)


def _moved(instant: datetime, start: date, end: date, seconds: int) -> datetime:
    """The same payment dated elsewhere within the period (a statement may date it differently)."""
    first = datetime(start.year, start.month, start.day, 0, 30, tzinfo=TORONTO)
    span = int((datetime(end.year, end.month, end.day, 23, 30, tzinfo=TORONTO) - first).total_seconds())
    return first + timedelta(seconds=(int((instant - first).total_seconds()) + seconds) % max(span, 1))


@pytest.fixture
def directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ottrecon-model-") as name:
        yield Path(name)


@pytest.mark.timeout(max(120, EXAMPLES * STEPS))
def test_ledger_summary_and_alerts_equal_the_reference_model(
    database_url: str, redis_url: str, merchants: MerchantKeys, directory: Path
) -> None:
    started = time.monotonic()
    with world(database_url, redis_url, merchants) as shared:
        LedgerHistories.world, LedgerHistories.directory = shared, directory
        LedgerHistories.examples = LedgerHistories.steps = 0
        LedgerHistories.reached = Counter()
        run_histories(LedgerHistories, EXAMPLES, STEPS)
    print(
        f"\nmodel histories: {LedgerHistories.examples} histories, {LedgerHistories.steps} steps, "
        f"{time.monotonic() - started:.1f} s; rows compared by status: {dict(sorted(LedgerHistories.reached.items()))}"
    )
    # A long run that never reached these compared nothing interesting: the generator is broken. (A bounded
    # run reaches most of them, not reliably all: it is not asked to.)
    wanted = {"matched", "amount_mismatch", "duplicate_payment", "orphan_payment", "not_in_ledger", "unpaid",
              "missing_callback", "paid_after_flagged", "statement:matched", "statement:amount_differs",
              "statement:refund_differs", "statement:duplicate_settlement", "statement:not_in_statement",
              "statement:not_in_ledger", "close:closed", "close:unacknowledged", "close:separately",
              "reopen:reopened", "reopen:blocked", "adjustment:late_callback",
              "adjustment:statement_correction"}  # fmt: skip
    # Not adjustment:late_refund: the gateway dates a refund now, and only dates before today can be closed, so no
    # refund here lands on a closed date (tests/integration/test_closing.py books one the gateway dated earlier).
    assert EXAMPLES < 300 or wanted <= set(LedgerHistories.reached), wanted - set(LedgerHistories.reached)
