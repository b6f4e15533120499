"""Closing the books as plain Python: docs/RECONCILIATION.md, "Closing the books", for model-based tests.

Written from that section alone over the reference model's ledger rows and refund bookings
(tests/reconciliation_model.py): closes freeze what each order contributes to a date's summary, later
changes become adjustments on the first open date, a reopen folds a date's entries back. No SQL.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from tests import reconciliation_model as model

# The figures an order contributes to a summary row, in this order (net is derived).
FIGURES = ("payments", "gross", "tips", "refunds", "fees", "mismatches", "amount_at_risk", "unpaid")
Figures = tuple[int, int, int, int, int, int, int, int]
ZERO: Figures = (0, 0, 0, 0, 0, 0, 0, 0)
Place = tuple[str, str, date, str | None]  # merchant, order, date, channel
LineIds = frozenset[tuple[int, int]]  # a key's current statement lines: (import id, line number)


class Refused(Exception):
    """The model says the system must refuse (the message says why)."""


@dataclass(frozen=True)
class Entry:
    merchant_id: str
    order_id: str
    kind: str  # close | adjustment
    reason: str | None
    corrects_date: date
    booked_on: date
    channel: str | None
    figures: Figures
    seen_lines: LineIds
    number: int  # the order's entry number: 1, 2, 3…


def _add(a: Figures, b: Figures, sign: int = 1) -> Figures:
    return tuple(x + sign * y for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def contributions(
    ledger: Mapping[model.Key, model.LedgerRow], bookings: Iterable[model.RefundBooking]
) -> dict[Place, Figures]:
    """What every order contributes to the daily summary now, per date and channel."""
    found: dict[Place, Figures] = defaultdict(lambda: ZERO)
    for row in ledger.values():
        received = row.received_amount is not None
        figures: Figures = (
            int(received),
            row.received_amount or 0,
            row.received_tip or 0,
            0,
            row.fee if received else 0,
            int(model.is_mismatch(row)),
            row.amount_at_risk + row.statement_amount_at_risk,
            int(row.recon_status == "unpaid"),
        )
        place = (row.merchant_id, row.order_id, row.business_date, row.channel)
        found[place] = _add(found[place], figures)
    for b in bookings:
        place = (b.merchant_id, b.order_id, b.business_date, b.channel)
        found[place] = _add(found[place], (0, 0, 0, b.amount, 0, 0, 0, 0))
    return dict(found)


@dataclass
class Books:
    """The closes in force (date, merchant or None for every merchant) and every entry ever booked."""

    closes: set[tuple[date, str | None]] = field(default_factory=set)
    entries: list[Entry] = field(default_factory=list)
    folded: set[int] = field(default_factory=set)  # indexes into entries

    def closed(self, day: date, merchant_id: str) -> bool:
        return (day, None) in self.closes or (day, merchant_id) in self.closes

    def live_entries(self) -> list[Entry]:
        return [e for n, e in enumerate(self.entries) if n not in self.folded]

    def _next_number(self, key: model.Key) -> int:
        return 1 + max((e.number for e in self.entries if (e.merchant_id, e.order_id) == key), default=0)

    def close(
        self,
        days: list[date],
        merchant_id: str | None,
        now: Mapping[Place, Figures],
        lines: Mapping[model.Key, LineIds],
    ) -> list[date]:
        """Close the dates not closed yet for that scope; returns them."""
        if merchant_id is None:
            separately = [d for d in days for (c, m) in self.closes if c == d and m is not None]
            if separately:
                raise Refused(f"closed separately on {separately}")
        wanted = [d for d in days if (d, None) not in self.closes and (d, merchant_id) not in self.closes]
        for day in wanted:
            self.closes.add((day, merchant_id))
            for place, figures in sorted(
                now.items(), key=lambda item: (item[0][:3], item[0][3] is None, item[0][3] or "")
            ):
                m, o, d, channel = place
                if d == day and merchant_id in (None, m):
                    self.entries.append(
                        Entry(m, o, "close", None, day, day, channel, figures, lines.get((m, o), frozenset()),
                              self._next_number((m, o)))
                    )  # fmt: skip
        return wanted

    def reopen(self, day: date, merchant_id: str | None) -> None:
        if (day, merchant_id) not in self.closes:
            raise Refused(f"{day} is not closed for {merchant_id or 'every merchant'}")
        blocked = [
            e
            for e in self.live_entries()
            if e.kind == "adjustment"
            and e.corrects_date == day
            and merchant_id in (None, e.merchant_id)
            and self.closed(e.booked_on, e.merchant_id)
        ]
        if blocked:
            raise Refused(f"adjustments of {day} sit on closed dates")
        self.closes.remove((day, merchant_id))
        for n, e in enumerate(self.entries):
            if n not in self.folded and e.corrects_date == day and merchant_id in (None, e.merchant_id):
                self.folded.add(n)

    def first_open_after(self, day: date, merchant_id: str) -> date:
        day += timedelta(days=1)
        while self.closed(day, merchant_id):
            day += timedelta(days=1)
        return day

    def book(self, now: Mapping[Place, Figures], lines: Mapping[model.Key, LineIds]) -> None:
        """After reconciling: every difference between now and what is booked for a closed date is an adjustment."""
        booked: dict[Place, Figures] = defaultdict(lambda: ZERO)
        for e in self.live_entries():
            place = (e.merchant_id, e.order_id, e.corrects_date, e.channel)
            booked[place] = _add(booked[place], e.figures)
        by_key: dict[model.Key, list[tuple[Place, Figures]]] = defaultdict(list)
        for place in set(now) | set(booked):
            merchant_id, order_id, day, _ = place
            delta = _add(now.get(place, ZERO), booked.get(place, ZERO), -1)
            if delta != ZERO and self.closed(day, merchant_id):
                by_key[(merchant_id, order_id)].append((place, delta))
        for key, changes in sorted(by_key.items()):
            seen = lines.get(key, frozenset())
            latest = max((e for e in self.entries if (e.merchant_id, e.order_id) == key), key=lambda e: e.number,
                         default=None)  # fmt: skip
            before = latest.seen_lines if latest is not None else frozenset()
            number = self._next_number(key)
            for (m, o, day, channel), delta in sorted(changes, key=lambda c: (c[0][2], c[0][3] is None, c[0][3] or "")):
                if delta[FIGURES.index("refunds")] != 0:
                    reason = "late_refund"
                elif seen != before:
                    reason = "statement_correction"
                else:
                    reason = "late_callback"
                self.entries.append(
                    Entry(m, o, "adjustment", reason, day, self.first_open_after(day, m), channel, delta, seen, number)
                )
                number += 1

    def summary(self, now: Mapping[Place, Figures]) -> list[model.SummaryRow]:
        """The summary with closes: live rows of open dates, frozen rows of closed ones, adjustment rows."""
        groups: dict[tuple[date, str, str | None, str, date | None, str | None], Figures] = {}

        def add(group: tuple[date, str, str | None, str, date | None, str | None], figures: Figures) -> None:
            groups[group] = _add(groups.get(group, ZERO), figures)

        for (merchant_id, _order_id, day, channel), figures in now.items():
            if not self.closed(day, merchant_id):
                add((day, merchant_id, channel, "day", None, None), figures)
        for e in self.live_entries():
            if e.kind == "close":
                add((e.booked_on, e.merchant_id, e.channel, "day", None, None), e.figures)
            else:
                add((e.booked_on, e.merchant_id, e.channel, "adjustment", e.corrects_date, e.reason), e.figures)
        rows = []
        for (day, merchant_id, channel, entry, corrects, reason), f in groups.items():
            payments, gross, tips, refunds, fees, mismatches, at_risk, unpaid = f
            net = gross + tips - refunds - fees
            rows.append(
                model.SummaryRow(day, merchant_id, channel, payments, gross, tips, refunds, fees, net, mismatches,
                                 at_risk, unpaid, entry, corrects, reason)
            )  # fmt: skip
        return sorted(
            rows,
            key=lambda r: (r.business_date, r.merchant_id, r.channel is None, r.channel or "", r.entry != "day",
                           r.corrects_date or date.min, r.reason or ""),
        )  # fmt: skip


def line_ids(evidence: model.Evidence) -> dict[model.Key, LineIds]:
    """Each key's current statement lines (the reference model's rule), as (import id, line number)."""
    found: dict[model.Key, set[tuple[int, int]]] = defaultdict(set)
    for owner, line in model.current_lines(evidence.imports):
        found[(line.merchant_id, line.order_id)].add((owner.id, line.line_no))
    return {key: frozenset(ids) for key, ids in found.items()}
