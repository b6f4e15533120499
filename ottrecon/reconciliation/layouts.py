"""Settlement statement CSV layouts: column mapping, exact amount parsing and line-numbered validation. Pure."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal

from ottpay.finish_time import parse_finish_time
from ottrecon.errors import OttreconError

FIELDS = ("merchant_id", "order_id", "bizpay_order_id", "amount", "tip", "fee", "refund", "txn_time")
REQUIRED_FIELDS = ("merchant_id", "order_id", "amount")
AMOUNT_STYLES = ("cents", "decimal")
MAX_PROBLEMS = 50
_CENTS = re.compile(r"[0-9]{1,15}")
_DECIMAL = re.compile(r"[0-9]{1,13}(\.[0-9]{1,2})?")
_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class StatementError(OttreconError):
    """The statement cannot be imported; nothing was stored."""

    def __init__(self, problems: Sequence[str], message: str | None = None) -> None:
        super().__init__(message)
        self.problems = tuple(problems)

    def __str__(self) -> str:
        return "\n  ".join([super().__str__(), *self.problems])


@dataclass(frozen=True)
class StatementLayout:
    """(field, header name) pairs saying which column holds each field, and how amounts are written."""

    columns: tuple[tuple[str, str], ...] = tuple((name, name) for name in FIELDS)
    amounts: str = "cents"

    def __post_init__(self) -> None:
        if self.amounts not in AMOUNT_STYLES:
            raise StatementError([f"amounts must be cents or decimal, not {self.amounts!r}"], "invalid layout")

    @classmethod
    def from_spec(cls, spec: str, amounts: str = "cents") -> StatementLayout:
        """Parse "merchant_id=Merchant ID,order_id=Order No,…"; raise StatementError listing every problem.

        Unmapped optional fields read as 0 (amounts) or empty. Header names cannot contain commas.
        """
        problems, mapped = list[str](), dict[str, str]()
        for position, entry in enumerate(spec.split(","), start=1):
            name, sep, header = (part.strip() for part in entry.partition("="))
            if not sep or not name or not header:
                problems.append(f"entry {position} is not field=Header Name")
            elif name not in FIELDS:
                problems.append(f"entry {position}: unknown field {name!r} (fields: {', '.join(FIELDS)})")
            elif name in mapped:
                problems.append(f"entry {position}: field {name!r} is mapped twice")
            elif header in mapped.values():
                problems.append(f"entry {position}: header {header!r} is already mapped to another field")
            else:
                mapped[name] = header
        problems += [f"required field {name!r} is not mapped" for name in REQUIRED_FIELDS if name not in mapped]
        if amounts not in AMOUNT_STYLES:
            problems.append(f"amounts must be cents or decimal, not {amounts!r}")
        if problems:
            raise StatementError(problems, "invalid statement column mapping:")
        return cls(tuple(mapped.items()), amounts)


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One valid statement line; amounts in integer cents. business_date is None when the line has no time."""

    line_no: int
    merchant_id: str
    order_id: str
    bizpay_order_id: str | None
    amount: int
    tip: int
    fee: int
    refund: int
    txn_time_raw: str | None
    txn_time: datetime | None
    business_date: date | None

    @property
    def sha256(self) -> str:
        """Hash of the content, not the position: the same in any file, layout or amount style.

        Tells an import report which lines repeat an earlier statement unchanged; not a key.
        """
        when = self.txn_time.astimezone(UTC).isoformat() if self.txn_time else str(self.business_date or "")
        ids = [self.merchant_id, self.order_id, self.bizpay_order_id or ""]
        content: list[object] = [*ids, self.amount, self.tip, self.fee, self.refund, when]
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()


@dataclass(frozen=True)
class ImportReport:
    """What import_statement did; import_id is None when the same file was imported before."""

    import_id: int | None
    already_imported: bool
    lines_read: int
    lines_stored: int  # every line read, unless the file was already imported
    unchanged_lines: int  # lines an earlier import stated identically (informational: the newer one counts)
    repeated_payments: int  # lines repeating a gateway payment listed earlier in this file: settled twice
    period_start: date
    period_end: date
    merchant_ids: tuple[str, ...]


def parse_amount(raw: str, amounts: str) -> int:
    """Integer cents of an amount cell ("cents": "1250"; "decimal": "12.50"); ValueError says why. Never a float."""
    text = raw.strip()
    if amounts == "cents" and _CENTS.fullmatch(text):
        return int(text)
    if amounts == "decimal" and _DECIMAL.fullmatch(text):
        return int(Decimal(text) * 100)  # exact: at most 2 places, so the product is integral
    if amounts == "decimal" and re.fullmatch(r"[0-9]+\.[0-9]{3,}", text):
        raise ValueError(f"{raw[:30]!r} has more than 2 decimal places")
    if "," in text:
        raise ValueError(f"{raw[:30]!r} has a thousands separator, which is not allowed")
    raise ValueError(f"{raw[:30]!r} is not " + ("integer cents like 1250" if amounts == "cents" else "like 12.50"))


def parse_statement(
    lines: Iterable[str],
    layout: StatementLayout,
    *,
    business_tz: tzinfo,
    period: tuple[date, date] | None = None,
    merchants: frozenset[str] | None = None,
) -> Iterator[StatementLine]:
    """Yield every valid line (blank lines skipped); at the end raise StatementError if any line was bad.

    lines are text lines with their line ends (an open file). Problems name line numbers (the
    header is line 1) and are collected up to MAX_PROBLEMS. Lines outside a given period, or of a
    merchant not among the given merchants, are bad.
    """
    reader, problems = csv.reader(lines), list[str]()
    try:
        # A BOM survives when the caller decoded with plain "utf-8"; it is not part of the name.
        header = [cell.lstrip("\ufeff").strip() for cell in next(reader, [])]
        index = _header_index(header, layout)
        for row in reader:
            if any(cell.strip() for cell in row):
                parsed = _parse_row(
                    reader.line_num, row, len(header), index, layout.amounts, business_tz, period, merchants
                )
                if isinstance(parsed, StatementLine):
                    yield parsed
                else:
                    problems += [f"line {reader.line_num}: {problem}" for problem in parsed]
            if len(problems) >= MAX_PROBLEMS:
                break
    except UnicodeDecodeError:
        problems.append(f"line {reader.line_num + 1}: not UTF-8 text")
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: {exc}")
    if problems:
        more = f" (the first {MAX_PROBLEMS} problems)" if len(problems) >= MAX_PROBLEMS else ""
        raise StatementError(problems[:MAX_PROBLEMS], f"statement rejected, nothing imported{more}:")


def _header_index(header: list[str], layout: StatementLayout) -> dict[str, int]:
    """Each mapped field's column position; raise StatementError if a mapped column is missing or repeated."""
    index = {name: header.index(column) for name, column in layout.columns if header.count(column) == 1}
    problems = [
        f"line 1: header column {column!r} (for {name}) is {'repeated' if column in header else 'missing'}"
        for name, column in layout.columns
        if name not in index
    ]
    if problems:
        raise StatementError(problems, "statement rejected, nothing imported:")
    return index


def _parse_row(
    line_no: int,
    row: list[str],
    width: int,
    index: dict[str, int],
    amounts: str,
    tz: tzinfo,
    period: tuple[date, date] | None,
    merchants: frozenset[str] | None,
) -> StatementLine | list[str]:
    if len(row) != width:
        return [f"{len(row)} cells, but the header has {width}"]
    cells = {name: row[index[name]].strip() if name in index else "" for name in FIELDS}
    problems = [f"{name} is empty" for name in REQUIRED_FIELDS if not cells[name]]
    cents = dict.fromkeys(("amount", "tip", "fee", "refund"), 0)
    for name in cents:
        try:
            cents[name] = parse_amount(cells[name], amounts) if cells[name] else 0
        except ValueError as exc:
            problems.append(f"{name} {exc}")
    raw_time, when, day = cells["txn_time"] or None, None, None
    if raw_time:
        when = parse_finish_time(raw_time, default_tz=tz)
        # A bare date is a business date without a time; parse_finish_time rejects it on purpose.
        day = when.astimezone(tz).date() if when else _date_or_none(raw_time)
        if day is None:
            problems.append(f"txn_time {raw_time[:30]!r} is not a date-time like 2024-05-01 13:45:00")
    if period and day and not period[0] <= day <= period[1]:
        problems.append(f"business date {day} is outside the period {period[0]}..{period[1]}")
    if merchants is not None and cells["merchant_id"] and cells["merchant_id"] not in merchants:
        problems.append(f"merchant_id {cells['merchant_id'][:30]!r} is not one of {', '.join(sorted(merchants))}")
    if problems:
        return problems
    merchant_id, order_id, bizpay_order_id = cells["merchant_id"], cells["order_id"], cells["bizpay_order_id"] or None
    amount, tip, fee, refund = cents.values()
    return StatementLine(line_no, merchant_id, order_id, bizpay_order_id, amount, tip, fee, refund, raw_time, when, day)


def _date_or_none(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if _DATE_ONLY.fullmatch(text) else None
    except ValueError:
        return None
