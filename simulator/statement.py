"""GET /sim/statement.csv: a settlement statement of the simulator's paid orders, with seeded differences."""

from __future__ import annotations

import csv
import dataclasses
import io
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from ottpay.finish_time import BEIJING
from simulator.core import SIM
from simulator.state import Order, SimState

# The default layout of ottrecon.reconciliation.statements (docs/STATEMENTS.md).
HEADER = ("merchant_id", "order_id", "bizpay_order_id", "amount", "tip", "fee", "refund", "txn_time")
PAID_STATUSES = frozenset({"success", "partial_refunded", "fully_refunded"})
FEE_PERCENT = 2
MAX_INJECTED = 100  # each kind; the answer-key headers must stay well under 8 KiB
_ZONE = ZoneInfo("America/Toronto")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_COUNTS = ("missing", "extra", "amount_differs")


@dataclass(frozen=True)
class Differences:
    """How many real lines to drop, invented lines to add and real amounts to change; seed picks which."""

    missing: int = 0
    extra: int = 0
    amount_differs: int = 0
    seed: int = 0


@dataclass(frozen=True)
class Line:
    """One statement line; amounts in integer cents, paid_at in Toronto time."""

    merchant_id: str
    order_id: str
    bizpay_order_id: str
    amount: int
    tip: int
    refund: int
    paid_at: datetime

    @property
    def fee(self) -> int:
        """FEE_PERCENT of amount + tip, rounded down to a cent (integer arithmetic, no float)."""
        return (self.amount + self.tip) * FEE_PERCENT // 100

    def row(self) -> list[object]:
        """The CSV cells, in HEADER order."""
        ids = [self.merchant_id, self.order_id, self.bizpay_order_id]
        return [*ids, self.amount, self.tip, self.fee, self.refund, self.paid_at.strftime("%Y-%m-%d %H:%M:%S")]


@dataclass(frozen=True)
class Statement:
    """The lines, oldest first, and the answer key: 'merchant_id/order_id' of each injected difference."""

    lines: list[Line]
    missing: list[str]
    extra: list[str]
    amount_differs: list[str]


def build_statement(
    state: SimState, merchant_ids: Sequence[str], start: date, end: date, differences: Differences
) -> Statement:
    """Paid orders of merchant_ids whose payment time falls on start..end (Toronto dates), then the differences.

    Deterministic: the same orders and seed give the same statement. Uses its own random source,
    so fetching a statement never shifts the simulator's fault draws.
    """
    real = []
    for order in state.orders.values():
        if order.status in PAID_STATUSES and order.trade_time and order.merchant_id in merchant_ids:
            paid_at = _toronto(order.trade_time)
            if start <= paid_at.date() <= end:
                ids = (order.merchant_id, order.order_id, order.bizpay_order_id or "")
                real.append(Line(*ids, order.amount, order.tip, _refunded_by(order, end), paid_at))
    real.sort(key=lambda line: (line.paid_at, line.merchant_id, line.order_id))
    rng = random.Random(differences.seed)
    dropped = set(rng.sample(range(len(real)), min(differences.missing, len(real))))
    kept = [line for position, line in enumerate(real) if position not in dropped]
    changed = rng.sample(range(len(kept)), min(differences.amount_differs, len(kept)))
    for position in changed:
        kept[position] = dataclasses.replace(kept[position], amount=kept[position].amount + rng.randint(1, 100))
    invented: list[Line] = []
    for _ in range(differences.extra):
        invented.append(_invented_line(rng, state, merchant_ids, start, end, {line.order_id for line in invented}))
    return Statement(
        lines=sorted(kept + invented, key=lambda line: (line.paid_at, line.merchant_id, line.order_id)),
        missing=[_key(real[position]) for position in sorted(dropped)],
        extra=[_key(line) for line in invented],
        amount_differs=[_key(kept[position]) for position in sorted(changed)],
    )


def _invented_line(
    rng: random.Random, state: SimState, merchant_ids: Sequence[str], start: date, end: date, taken: set[str]
) -> Line:
    merchant_id = rng.choice(merchant_ids)
    order_id = f"X{rng.randrange(10**11):011d}"
    while state.id_in_use(merchant_id, order_id) or order_id in taken:  # an id the merchant never had
        order_id = f"X{rng.randrange(10**11):011d}"
    day = start + timedelta(days=rng.randint(0, (end - start).days))
    paid_at = datetime(day.year, day.month, day.day, tzinfo=_ZONE) + timedelta(seconds=rng.randrange(86400))
    return Line(merchant_id, order_id, f"AL{rng.randrange(10**15):015d}", rng.randint(100, 50_000), 0, 0, paid_at)


def _toronto(gateway_time: str) -> datetime:
    # The gateway's own times are compact Beijing wall time; the statement speaks Toronto time.
    return datetime.strptime(gateway_time, "%Y%m%d%H%M%S").replace(tzinfo=BEIJING).astimezone(_ZONE)


def _refunded_by(order: Order, end: date) -> int:
    """Cents refunded on or before the period's last Toronto date: the refund column as of the period end."""
    return sum(refund.amount for refund in order.refunds if _toronto(refund.refund_time).date() <= end)


def _key(line: Line) -> str:
    return f"{line.merchant_id}/{line.order_id}"


async def statement_csv(request: web.Request) -> web.Response:
    """GET /sim/statement.csv?from=&to=[&merchant_id=][&missing=][&extra=][&amount_differs=][&seed=].

    200 text/csv in the default statement layout, with X-Sim-Missing, X-Sim-Extra and
    X-Sim-Amount-Differs headers naming what was injected; 400 JSON listing every bad parameter.
    """
    sim = request.app[SIM]
    query, problems = request.query, list[str]()
    start, end = _date(query, "from", problems), _date(query, "to", problems)
    if start and end and start > end:
        problems.append("from must not be after to")
    merchant_ids = sorted(sim.settings.merchants)
    if "merchant_id" in query:
        merchant_ids = [query["merchant_id"]]
        if query["merchant_id"] not in sim.settings.merchants:
            problems.append("merchant_id is not a configured merchant")
    counts = {name: _int(query, name, 0, 0, MAX_INJECTED, problems) for name in _COUNTS}
    seed = _int(query, "seed", sim.settings.seed, -(2**63), 2**63 - 1, problems)
    if problems or start is None or end is None:
        return web.json_response({"error": "invalid_query", "problems": problems}, status=400)
    result = build_statement(sim.state, merchant_ids, start, end, Differences(**counts, seed=seed))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(line.row() for line in result.lines)
    headers = {
        "Content-Disposition": f'attachment; filename="statement-{start}-{end}.csv"',
        "X-Sim-Missing": ",".join(result.missing),
        "X-Sim-Extra": ",".join(result.extra),
        "X-Sim-Amount-Differs": ",".join(result.amount_differs),
    }
    return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8", headers=headers)


def _date(query: Mapping[str, str], name: str, problems: list[str]) -> date | None:
    text = query.get(name, "")
    try:
        if _DATE.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    problems.append(f"{name} must be a date YYYY-MM-DD")
    return None


def _int(query: Mapping[str, str], name: str, default: int, low: int, high: int, problems: list[str]) -> int:
    text = query.get(name)
    if text is None:
        return default
    if re.fullmatch(r"-?[0-9]{1,19}", text) and low <= int(text) <= high:
        return int(text)
    problems.append(f"{name} must be an integer from {low} to {high}")
    return default
