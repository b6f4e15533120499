"""A reference reconciler: docs/RECONCILIATION.md as plain Python, for model-based tests.

Written from that page alone, rule by rule, over plain records (no SQL, no database, no clever
shortcuts), so that when it and reconciliation/queries/reconcile_ledger.sql disagree one of them misreads the
page. Money is integer cents; times are aware datetimes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

Key = tuple[str, str]  # (merchant id, order id)


@dataclass(frozen=True)
class Order:
    """An order this system created, as the submission state machine left it."""

    kind: str
    channel: str
    amount: int
    tip: int
    status: str
    paid_amount: int | None
    paid_source: str | None
    paid_at: datetime | None
    unpaid_flagged_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Payment:
    """The first report that the order was paid."""

    amount: int
    tip: int
    channel_id: str | None
    finish_time: datetime | None
    source: str
    recorded_at: datetime


@dataclass(frozen=True)
class Callback:
    """One authentic SUCCESS callback (distinct bodies; a redelivery of the same body is the same one)."""

    amount: int
    tip: int
    channel_id: str | None
    received_at: datetime


@dataclass(frozen=True)
class Refund:
    """One succeeded refund."""

    refund_order_id: str
    amount: int
    succeeded_at: datetime


@dataclass(frozen=True)
class StatementLine:
    merchant_id: str
    order_id: str
    channel_id: str | None
    amount: int
    tip: int
    fee: int
    refund: int
    business_date: date
    line_no: int


@dataclass(frozen=True)
class StatementImport:
    id: int
    period_start: date
    period_end: date
    lines: tuple[StatementLine, ...]
    declared: frozenset[str] = frozenset()  # the merchants the import was given (--merchant), if any

    @property
    def merchants(self) -> frozenset[str]:
        # The merchants given, else those the lines name (STATEMENTS.md; a file without lines must be given some).
        return self.declared or frozenset(line.merchant_id for line in self.lines)

    def covers(self, merchant_id: str, day: date) -> bool:
        return merchant_id in self.merchants and self.period_start <= day <= self.period_end

    def outranks(self, other: StatementImport) -> bool:
        return (self.period_end, self.id) > (other.period_end, other.id)


@dataclass
class Evidence:
    """Everything known, by key."""

    orders: dict[Key, Order] = field(default_factory=dict)
    payments: dict[Key, Payment] = field(default_factory=dict)
    callbacks: dict[Key, list[Callback]] = field(default_factory=lambda: defaultdict(list))
    answer_channel_ids: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    refunds: dict[Key, list[Refund]] = field(default_factory=lambda: defaultdict(list))
    imports: list[StatementImport] = field(default_factory=list)

    def keys(self) -> set[Key]:
        lines = {(line.merchant_id, line.order_id) for i in self.imports for line in i.lines}
        sources: list[Iterable[Key]] = [self.orders, self.payments, self.callbacks, lines]
        return {key for source in sources for key in source}


@dataclass(frozen=True)
class LedgerRow:
    merchant_id: str
    order_id: str
    kind: str | None
    channel: str | None
    order_status: str | None
    expected_amount: int | None
    expected_tip: int | None
    received_amount: int | None
    received_tip: int | None
    refunded_amount: int
    fee: int
    channel_payment_ids: tuple[str, ...]
    callback_count: int
    paid_source: str | None
    recon_status: str
    statement_status: str | None
    statement_amount: int | None
    statement_tip: int | None
    statement_refund: int | None
    statement_import_ids: tuple[int, ...]
    amount_at_risk: int
    statement_amount_at_risk: int
    created_at: datetime | None
    paid_at: datetime | None
    business_date: date


@dataclass(frozen=True)
class RefundBooking:
    merchant_id: str
    order_id: str
    refund_order_id: str
    channel: str | None
    amount: int
    business_date: date


@dataclass(frozen=True)
class SummaryRow:
    business_date: date
    merchant_id: str
    channel: str | None
    payments: int
    gross: int
    tips: int
    refunds: int
    fees: int
    net: int
    mismatches: int
    amount_at_risk: int
    unpaid: int
    entry: str = "day"  # or "adjustment" (closing the books)
    corrects_date: date | None = None
    reason: str | None = None


PAID_STATUSES = ("paid", "partially_refunded", "refunded")
ENDED_UNPAID = ("declined", "failed", "closed", "expired")
CHANNEL_PREFIXES = {"AL": "ALIPAY", "WX": "WECHATPAY", "UP": "UNIONPAY"}
STATEMENT_MISMATCHES = ("not_in_statement", "not_in_ledger", "amount_differs", "duplicate_settlement", "refund_differs")
ALERT_KIND = {"amount_differs": "statement_amount_differs", "refund_differs": "statement_refund_differs"}


def current_lines(imports: list[StatementImport]) -> list[tuple[StatementImport, StatementLine]]:
    """Lines no outranking import supersedes ("Which statement line counts")."""
    current = []
    for owner in imports:
        for line in owner.lines:
            superseded = any(
                other.outranks(owner)
                and (
                    other.covers(line.merchant_id, line.business_date)
                    or any(_same_payment(line, theirs) for theirs in other.lines)
                )
                for other in imports
            )
            if not superseded:
                current.append((owner, line))
    return current


def _same_payment(a: StatementLine, b: StatementLine) -> bool:
    return (a.merchant_id, a.order_id, a.channel_id or "") == (b.merchant_id, b.order_id, b.channel_id or "")


def reconcile(evidence: Evidence, business_tz: str) -> dict[Key, LedgerRow]:
    """The ledger: one row per key with any evidence."""
    tz = ZoneInfo(business_tz)
    lines_by_key: dict[Key, list[tuple[StatementImport, StatementLine]]] = defaultdict(list)
    for owner, line in current_lines(evidence.imports):
        lines_by_key[(line.merchant_id, line.order_id)].append((owner, line))
    ledger = {}
    for key in sorted(evidence.keys()):
        row = _row(key, evidence, lines_by_key.get(key, []), tz)
        if row is not None:
            ledger[key] = row
    return ledger


def _row(
    key: Key, evidence: Evidence, lines: list[tuple[StatementImport, StatementLine]], tz: ZoneInfo
) -> LedgerRow | None:
    order = evidence.orders.get(key)
    payment = evidence.payments.get(key)
    callbacks = evidence.callbacks.get(key, [])
    refunds = evidence.refunds.get(key, [])
    if order is None and payment is None and not callbacks and not lines:
        return None  # no evidence left: no row

    # Received: the payment's figures, else what the order was proven paid.
    if payment is not None:
        received_amount: int | None = payment.amount
        received_tip: int | None = payment.tip
    elif order is not None and order.paid_amount is not None:
        received_amount, received_tip = order.paid_amount, order.tip
    else:
        received_amount = received_tip = None
    paid = payment is not None or (order is not None and order.status in PAID_STATUSES)

    ids = {cb.channel_id for cb in callbacks if cb.channel_id}
    ids |= {i for i in evidence.answer_channel_ids.get(key, set()) if i}
    ids |= {line.channel_id for _, line in lines if line.channel_id}
    if payment is not None and payment.channel_id:
        ids.add(payment.channel_id)
    channel_ids = tuple(sorted(ids))

    if order is not None:
        channel: str | None = order.channel
    elif channel_ids:
        channel = CHANNEL_PREFIXES.get(channel_ids[0][:2])
    else:
        channel = None

    # Statement figures from the current lines.
    has_lines = bool(lines)
    st_amount = sum(line.amount for _, line in lines) if has_lines else None
    st_tip = sum(line.tip for _, line in lines) if has_lines else None
    st_refund = sum(line.refund for _, line in lines) if has_lines else None
    fee = sum(line.fee for _, line in lines)
    import_ids = tuple(sorted({owner.id for owner, _ in lines}))

    first_callback = min((cb.received_at for cb in callbacks), default=None)
    created_at = _first(order.created_at if order else None, payment.recorded_at if payment else None, first_callback)
    paid_at = _first(order.paid_at if order else None, payment.recorded_at if payment else None, first_callback)
    when = _first(
        payment.finish_time if payment else None,
        order.paid_at if order else None,
        payment.recorded_at if payment else None,
        first_callback,
        order.created_at if order else None,
    )
    if when is not None:
        business_date = when.astimezone(tz).date()
    else:
        business_date = min(line.business_date for _, line in lines)

    recon_status, amount_at_risk = _recon(
        order, paid, received_amount, received_tip, callbacks, channel_ids, st_amount, st_tip
    )

    # Statement status, first matching rule wins.
    statement_status: str | None = None
    statement_risk = 0
    if has_lines:
        assert st_amount is not None and st_tip is not None and st_refund is not None
        period_end = max(owner.period_end for owner, _ in lines)
        ours_through = sum(r.amount for r in refunds if r.succeeded_at.astimezone(tz).date() <= period_end)
        extra = _repeated_payment_lines(lines)
        if not paid:
            statement_status = "not_in_ledger"
            statement_risk = 0 if recon_status == "not_in_ledger" else st_amount + st_tip
        elif extra:
            statement_status = "duplicate_settlement"
            statement_risk = sum(line.amount + line.tip for line in extra)
        elif st_amount != received_amount or st_tip != received_tip:
            statement_status = "amount_differs"
            statement_risk = abs(st_amount + st_tip - (received_amount or 0) - (received_tip or 0))
        elif st_refund != ours_through:
            statement_status = "refund_differs"
            statement_risk = abs(st_refund - ours_through)
        else:
            statement_status = "matched"
    elif paid and any(i.covers(key[0], business_date) for i in evidence.imports):
        statement_status = "not_in_statement"
        statement_risk = (received_amount or 0) + (received_tip or 0)

    return LedgerRow(
        merchant_id=key[0],
        order_id=key[1],
        kind=order.kind if order else None,
        channel=channel,
        order_status=order.status if order else None,
        expected_amount=order.amount if order else None,
        expected_tip=order.tip if order else None,
        received_amount=received_amount,
        received_tip=received_tip,
        refunded_amount=sum(r.amount for r in refunds),
        fee=fee,
        channel_payment_ids=channel_ids,
        callback_count=len(callbacks),
        paid_source=(order.paid_source if order and order.paid_source else None)
        or (payment.source if payment else None),
        recon_status=recon_status,
        statement_status=statement_status,
        statement_amount=st_amount,
        statement_tip=st_tip,
        statement_refund=st_refund,
        statement_import_ids=import_ids,
        amount_at_risk=amount_at_risk,
        statement_amount_at_risk=statement_risk,
        created_at=created_at,
        paid_at=paid_at,
        business_date=business_date,
    )


def _recon(
    order: Order | None,
    paid: bool,
    received_amount: int | None,
    received_tip: int | None,
    callbacks: list[Callback],
    channel_ids: tuple[str, ...],
    st_amount: int | None,
    st_tip: int | None,
) -> tuple[str, int]:
    """Reconciliation status and its amount at risk, first matching rule wins."""
    received_total = (received_amount or 0) + (received_tip or 0)
    if order is None:
        if paid:
            return "orphan_payment", received_total
        if st_amount is not None:
            return "not_in_ledger", st_amount + (st_tip or 0)
        return "pending", 0
    expected_total = order.amount + order.tip
    if len(channel_ids) > 1:
        return "duplicate_payment", (len(channel_ids) - 1) * expected_total
    callback_differs = any(cb.amount != order.amount or cb.tip != order.tip for cb in callbacks)
    if paid and (received_amount != order.amount or received_tip != order.tip or callback_differs):
        risks = [abs(received_total - expected_total)]
        if callbacks:
            risks.append(abs(max(cb.amount for cb in callbacks) - order.amount))
            risks.append(abs(min(cb.amount for cb in callbacks) - order.amount))
        return "amount_mismatch", max(risks)
    if paid and order.unpaid_flagged_at is not None:
        return "paid_after_flagged", received_total
    if paid and order.kind == "ACTIVEPAY" and not callbacks:
        return "missing_callback", 0
    if paid:
        return "matched", 0
    if order.status == "unpaid":
        return "unpaid", expected_total
    if order.status == "review":
        return "review", expected_total
    if order.status in ENDED_UNPAID:
        return "matched", 0
    return "pending", 0


def _repeated_payment_lines(lines: list[tuple[StatementImport, StatementLine]]) -> list[StatementLine]:
    """Every line after the first (by import, then line number) of a gateway payment listed more than once."""
    seen: set[tuple[str, str, str]] = set()
    extra = []
    for _owner, line in sorted(lines, key=lambda pair: (pair[0].id, pair[1].line_no)):
        payment = (line.merchant_id, line.order_id, line.channel_id or "")
        if payment in seen:
            extra.append(line)
        seen.add(payment)
    return extra


def _first(*candidates: datetime | None) -> datetime | None:
    return next((c for c in candidates if c is not None), None)


def refund_bookings(evidence: Evidence, business_tz: str) -> list[RefundBooking]:
    """Every succeeded refund of an order we created, on the business date it happened."""
    tz = ZoneInfo(business_tz)
    return [
        RefundBooking(key[0], key[1], r.refund_order_id, order.channel, r.amount, r.succeeded_at.astimezone(tz).date())
        for key, order in evidence.orders.items()
        for r in evidence.refunds.get(key, [])
    ]


def is_mismatch(row: LedgerRow) -> bool:
    return row.recon_status not in ("matched", "pending") or row.statement_status in STATEMENT_MISMATCHES


def daily_summary(ledger: Mapping[Key, LedgerRow], bookings: list[RefundBooking]) -> list[SummaryRow]:
    """The daily summary, sorted by date, merchant, channel (no channel last)."""
    groups: dict[tuple[date, str, str | None], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in ledger.values():
        g = groups[(row.business_date, row.merchant_id, row.channel)]
        if row.received_amount is not None:
            g["payments"] += 1
            g["gross"] += row.received_amount
            g["tips"] += row.received_tip or 0
            g["fees"] += row.fee
        g["mismatches"] += is_mismatch(row)
        g["amount_at_risk"] += row.amount_at_risk + row.statement_amount_at_risk
        g["unpaid"] += row.recon_status == "unpaid"
    for booking in bookings:
        groups[(booking.business_date, booking.merchant_id, booking.channel)]["refunds"] += booking.amount
    rows = []
    for (day, merchant_id, channel), g in groups.items():
        net = g["gross"] + g["tips"] - g["refunds"] - g["fees"]
        rows.append(
            SummaryRow(
                day, merchant_id, channel, g["payments"], g["gross"], g["tips"], g["refunds"], g["fees"], net,
                g["mismatches"], g["amount_at_risk"], g["unpaid"],
            )
        )  # fmt: skip
    return sorted(rows, key=lambda r: (r.business_date, r.merchant_id, r.channel is None, r.channel or ""))


def wanted_alerts(ledger: Mapping[Key, LedgerRow]) -> dict[tuple[str, str, str], int]:
    """The open alerts: (kind, merchant, order) -> amount at risk; a kind found twice keeps the larger amount."""
    alerts: dict[tuple[str, str, str], int] = {}
    for row in ledger.values():
        found = []
        if row.recon_status not in ("matched", "pending"):
            found.append((row.recon_status, row.amount_at_risk))
        if row.statement_status in STATEMENT_MISMATCHES:
            assert row.statement_status is not None
            kind = ALERT_KIND.get(row.statement_status, row.statement_status)
            found.append((kind, row.statement_amount_at_risk))
        for kind, amount in found:
            alert = (kind, row.merchant_id, row.order_id)
            alerts[alert] = max(amount, alerts.get(alert, amount))
    return alerts
