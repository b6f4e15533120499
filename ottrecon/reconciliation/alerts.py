"""Alerts for people: list them, acknowledge or resolve one with an audit event, print a table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from ottrecon.db import fetch_one, translate_errors
from ottrecon.errors import OttreconError
from ottrecon.money import DEFAULT_CURRENCY, format_money
from ottrecon.reconciliation.statuses import AlertStatus

STATUSES = tuple(AlertStatus)  # open, acknowledged, resolved

# The columns an AlertView is built from.
ALERT_COLUMNS = (
    "id, kind, merchant_id, order_id, amount_at_risk, status, first_seen_at, last_seen_at, notified_at, "
    "resolved_at, resolution"
)
# Alerts by status (NULL: every one not resolved) and kind, newest first.
LIST_ALERTS = f"""
SELECT {ALERT_COLUMNS} FROM alerts
WHERE (CASE WHEN $1::text IS NULL THEN status <> 'resolved' ELSE status = $1 END)
  AND ($2::text IS NULL OR kind = $2)
ORDER BY first_seen_at DESC, id DESC
LIMIT $3
"""
# Lock one alert so that its state check and change cannot interleave with another operator's.
LOCK_ALERT = "SELECT status FROM alerts WHERE id = $1 FOR UPDATE"
# Move an alert to a new status; resolving stamps when and how it was resolved.
SET_STATUS = f"""
UPDATE alerts SET
    status = $2,
    resolved_at = CASE WHEN $2 = 'resolved' THEN now() ELSE resolved_at END,
    resolution = CASE WHEN $2 = 'resolved' THEN 'manual' ELSE resolution END
WHERE id = $1
RETURNING {ALERT_COLUMNS}
"""
# The audit trail: who did what to an alert, and why.
RECORD_EVENT = "INSERT INTO alert_events (alert_id, action, actor, note) VALUES ($1, $2, $3, $4)"
# Alerts of one status, newest first by keyset on (first_seen_at, id) (alerts_status_seen_idx), with the
# latest audit event so the list shows who did what last. Optional filters are appended as fixed clauses.
LIST_WITH_LAST_EVENT = """
SELECT a.id, a.kind, a.merchant_id, a.order_id, a.amount_at_risk, a.status, a.first_seen_at, a.last_seen_at,
       a.resolution, e.action AS last_action, e.actor AS last_actor, e.note AS last_note, e.at AS last_at
FROM alerts a
LEFT JOIN LATERAL (
    SELECT action, actor, note, at FROM alert_events WHERE alert_id = a.id ORDER BY id DESC LIMIT 1
) e ON true
WHERE a.status = $1 {filters}
ORDER BY a.first_seen_at DESC, a.id DESC
LIMIT {limit}
"""
COUNTS_BY_STATUS = (
    "SELECT status, count(*) AS n, coalesce(sum(amount_at_risk), 0)::int8 AS at_risk FROM alerts GROUP BY status"
)
# The order an alert is about.
ALERT_ORDER = "SELECT merchant_id, order_id FROM alerts WHERE id = $1"


def page_query(
    status: str, kind: str | None, merchant_id: str | None, after: tuple[Any, ...] | None, limit: int
) -> tuple[str, list[Any]]:
    """LIST_WITH_LAST_EVENT for one page: alerts of one status, optionally one kind and merchant, after a
    (first_seen_at, id) cursor. Only fixed clauses with $n placeholders are joined, never input."""
    args: list[Any] = [status]
    clauses = []
    for clause, value in (("a.kind = ${}", kind), ("a.merchant_id = ${}", merchant_id)):
        if value is not None:
            args.append(value)
            clauses.append(clause.format(len(args)))
    if after is not None:
        args.extend(after)
        clauses.append(f"(a.first_seen_at, a.id) < (${len(args) - 1}, ${len(args)})")
    return LIST_WITH_LAST_EVENT.format(filters="".join(f" AND {c}" for c in clauses), limit=int(limit)), args


class AlertError(OttreconError):
    """The alert operation failed."""


class AlertNotFound(AlertError):
    """No alert has that id."""


class AlertStateError(AlertError):
    """The alert is not in a state that allows this change."""


class AuditInfoMissing(AlertError):
    """Changing an alert needs an actor, and resolving one also needs a note saying why."""


class UnknownAlertStatus(AlertError):
    """The status filter must be open, acknowledged or resolved."""


@dataclass(frozen=True)
class AlertView:
    """One alert as operators see it; amount_at_risk is integer cents."""

    id: int
    kind: str
    merchant_id: str
    order_id: str
    amount_at_risk: int
    status: str
    first_seen_at: datetime
    last_seen_at: datetime
    notified_at: datetime | None
    resolved_at: datetime | None
    resolution: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record | Mapping[str, Any]) -> AlertView:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


async def list_alerts(
    pool: asyncpg.Pool, *, status: str | None = None, kind: str | None = None, limit: int = 100
) -> list[AlertView]:
    """Alerts newest first; status None means every alert not yet resolved. Read-only."""
    if status is not None and status not in STATUSES:
        raise UnknownAlertStatus(f"unknown alert status {status!r}: use one of {', '.join(STATUSES)}")
    async with translate_errors(), pool.acquire() as conn:
        rows = await conn.fetch(LIST_ALERTS, status, kind, limit)
    return [AlertView.from_row(row) for row in rows]


async def acknowledge(pool: asyncpg.Pool, alert_id: int, *, actor: str, note: str) -> AlertView:
    """Mark an open alert as seen by someone. Raises AlertNotFound, or AlertStateError unless it is open."""
    return await _change(pool, alert_id, "acknowledged", ("open",), actor=actor, note=note)


async def resolve(pool: asyncpg.Pool, alert_id: int, *, actor: str, note: str) -> AlertView:
    """Close an open or acknowledged alert by hand (resolution 'manual'); the note must say why."""
    if not note.strip():
        raise AuditInfoMissing("a note is required to resolve an alert: say why it is resolved")
    return await _change(pool, alert_id, "resolved", ("open", "acknowledged"), actor=actor, note=note)


async def _change(
    pool: asyncpg.Pool, alert_id: int, new_status: str, allowed: tuple[str, ...], *, actor: str, note: str
) -> AlertView:
    if not actor.strip():
        raise AuditInfoMissing("an actor is required: who is changing the alert")
    # The status change and its audit event commit together or not at all.
    async with translate_errors(), pool.acquire() as conn, conn.transaction():
        current = await conn.fetchval(LOCK_ALERT, alert_id)
        if current is None:
            raise AlertNotFound(f"no alert with id {alert_id}")
        if current not in allowed:
            raise AlertStateError(
                f"alert {alert_id} is {current}: only an alert that is {' or '.join(allowed)} can be {new_status}"
            )
        row = await fetch_one(conn, SET_STATUS, alert_id, new_status)
        await conn.execute(RECORD_EVENT, alert_id, new_status, actor.strip(), note.strip())
    return AlertView.from_row(row)


def format_time(at: datetime | None, tz: str = "America/Toronto") -> str:
    """A timestamp to the minute in the display time zone, with its abbreviation ('2024-05-01 08:00 EDT'),
    or '-' when absent: the same zone the finance console shows (OTTRECON_DISPLAY_TZ)."""
    return "-" if at is None else at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


def format_alert_table(
    alerts: Sequence[AlertView], tz: str = "America/Toronto", currency: str = DEFAULT_CURRENCY
) -> str:
    """A fixed-width table for `ottrecon alerts list`; amounts right-aligned as money in currency, times in tz."""
    if not alerts:
        return "no alerts\n"
    header = ("ID", "KIND", "MERCHANT", "ORDER", "AT RISK", "STATUS", "FIRST SEEN", "NOTIFIED")
    rows = [
        (
            str(a.id),
            printable(a.kind),
            printable(a.merchant_id),
            printable(a.order_id),
            format_money(a.amount_at_risk, currency),
            a.status if a.resolution is None else f"{a.status} ({printable(a.resolution)})",
            format_time(a.first_seen_at, tz),
            format_time(a.notified_at, tz),
        )
        for a in alerts
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    right = {0, 4}  # ids and amounts line up on their last digit
    lines = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in (header, *rows)
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def printable(text: str) -> str:
    """The text with every non-printable character (newlines, terminal escapes) shown as '?'."""
    # Merchant and order ids can come from untrusted callbacks: they must not drive a terminal or forge lines.
    return "".join(ch if ch.isprintable() else "?" for ch in text)
