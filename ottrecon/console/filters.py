"""Filters from the address bar, validated: business-date ranges, choices, ids. Bad input is a 400 page."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from ottrecon.console.errors import BadFilter
from ottrecon.console.times import today
from ottrecon.payments.statuses import Channel
from ottrecon.reconciliation.ledger_pages import LedgerSelection
from ottrecon.reconciliation.statuses import ReconStatus

# Control characters (NUL included, which Postgres text cannot hold) and unpaired surrogates.
CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
# An int8 id: at most 18 digits always fits.
_DIGITS = re.compile("[0-9]{1,18}")
# Longer ranges are refused rather than scanning years of ledger for one page.
MAX_DAYS = 366
MAX_TEXT = 64
CHANNELS = tuple(Channel)
RECON_STATUSES = tuple(ReconStatus)


@dataclass(frozen=True)
class DateRange:
    """Business dates date_from..date_to, inclusive."""

    date_from: date
    date_to: date

    @property
    def days(self) -> int:
        return (self.date_to - self.date_from).days + 1

    def params(self) -> dict[str, str]:
        return {"from": self.date_from.isoformat(), "to": self.date_to.isoformat()}


def date_range(query: Mapping[str, str], tz: str, problems: list[str]) -> DateRange:
    """?from=YYYY-MM-DD&to=YYYY-MM-DD. Neither: today in the display zone; only from: from..today;
    only to: that one day."""
    now = today(tz)
    start = _date(query, "from", problems)
    end = _date(query, "to", problems)
    start, end = start or (end or now), end or max(start or now, now)
    if start > end:
        problems.append(f"'from' ({start}) is after 'to' ({end})")
    elif end - start >= timedelta(days=MAX_DAYS):
        problems.append(f"the date range is longer than {MAX_DAYS} days: choose a shorter one")
    return DateRange(start, end)


def text(query: Mapping[str, str], name: str, problems: list[str]) -> str | None:
    """An optional id (merchant, order): trimmed, empty means no filter; no control characters
    (Postgres refuses NUL, and no id holds one)."""
    value = query.get(name, "").strip()
    if len(value) > MAX_TEXT:
        problems.append(f"{name} is longer than {MAX_TEXT} characters")
        return None
    if CONTROL.search(value):
        problems.append(f"{name} must not contain control characters")
        return None
    return value or None


def choice(query: Mapping[str, str], name: str, choices: tuple[str, ...], problems: list[str]) -> str | None:
    value = query.get(name, "").strip()
    if value and value not in choices:
        problems.append(f"{name} must be one of {', '.join(choices)}")
        return None
    return value or None


def positive_int(text: str, what: str) -> int:
    """A database id from the address (404-free validation: a non-number is a 400 page).

    ASCII digits only: str.isdigit also takes '²' and '٣', which int() then refuses.
    """
    if not _DIGITS.fullmatch(text):
        raise BadFilter([f"{what} must be a number"])
    return int(text)


@dataclass(frozen=True)
class LedgerFilter:
    """The ledger page's filters; the first three are the ones `ottrecon export ledger` also has."""

    dates: DateRange
    merchant_id: str | None = None
    channel: str | None = None
    recon_status: str | None = None
    order_id: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str], tz: str) -> LedgerFilter:
        problems: list[str] = []
        result = cls(
            dates=date_range(query, tz, problems),
            merchant_id=text(query, "merchant_id", problems),
            channel=choice(query, "channel", CHANNELS, problems),
            recon_status=choice(query, "recon_status", RECON_STATUSES, problems),
            order_id=text(query, "order_id", problems),
        )
        if problems:
            raise BadFilter(problems)
        return result

    @property
    def report_filters_only(self) -> bool:
        """True when `ottrecon export ledger` can express this filter (dates and merchant only)."""
        return self.channel is None and self.recon_status is None and self.order_id is None

    def selection(self) -> LedgerSelection:
        """The rows this filter selects, as the reports module reads them."""
        dates = self.dates
        return LedgerSelection(
            dates.date_from, dates.date_to, self.merchant_id, self.channel, self.recon_status, self.order_id
        )

    def params(self) -> dict[str, str]:
        extra = {"merchant_id": self.merchant_id, "channel": self.channel, "recon_status": self.recon_status}
        extra["order_id"] = self.order_id
        return self.dates.params() | {k: v for k, v in extra.items() if v}


def _date(query: Mapping[str, str], name: str, problems: list[str]) -> date | None:
    raw = query.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(f"'{name}' must be a date like 2024-05-01")
        return None
