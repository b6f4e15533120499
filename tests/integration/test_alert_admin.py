"""Operators' alert commands on real Postgres: list filters, acknowledge/resolve with audit events, the table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from ottrecon.errors import OttreconError
from ottrecon.reconciliation.alerts import (
    AlertNotFound,
    AlertStateError,
    AuditInfoMissing,
    UnknownAlertStatus,
    acknowledge,
    format_alert_table,
    list_alerts,
    resolve,
)
from tests.conftest import MERCHANT, OTHER_MERCHANT


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def add_alert(
    db: asyncpg.Connection,
    order_id: str,
    amount: int = 1250,
    *,
    kind: str = "unpaid",
    merchant_id: str = MERCHANT,
    status: str = "open",
    seen_minutes_ago: int = 0,
) -> int:
    """An alert row as the reconciler writes it."""
    alert_id: int = await db.fetchval(
        """INSERT INTO alerts (kind, merchant_id, order_id, amount_at_risk, status, first_seen_at)
           VALUES ($1, $2, $3, $4, $5, now() - make_interval(mins => $6)) RETURNING id""",
        kind,
        merchant_id,
        order_id,
        amount,
        status,
        seen_minutes_ago,
    )
    return alert_id


async def events(db: asyncpg.Connection, alert_id: int) -> list[tuple[str, str, str]]:
    rows = await db.fetch("SELECT action, actor, note FROM alert_events WHERE alert_id = $1 ORDER BY id", alert_id)
    return [(r["action"], r["actor"], r["note"]) for r in rows]


async def test_acknowledge_open_alert_records_audit_event(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    alert_id = await add_alert(db, "ORDER-1")

    view = await acknowledge(pool, alert_id, actor="maria", note="looking into it")

    assert (view.id, view.status, view.resolved_at, view.resolution) == (alert_id, "acknowledged", None, None)
    assert await db.fetchval("SELECT status FROM alerts WHERE id = $1", alert_id) == "acknowledged"
    assert await events(db, alert_id) == [("acknowledged", "maria", "looking into it")]


async def test_resolve_acknowledged_alert_is_manual_with_audit_trail(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    alert_id = await add_alert(db, "ORDER-2")
    await acknowledge(pool, alert_id, actor="maria", note="")

    view = await resolve(pool, alert_id, actor="li", note="refunded by phone, ticket 881")

    assert (view.status, view.resolution) == ("resolved", "manual") and view.resolved_at is not None
    row = await db.fetchrow("SELECT status, resolution, resolved_at FROM alerts WHERE id = $1", alert_id)
    assert row is not None and (row["status"], row["resolution"]) == ("resolved", "manual")
    assert await events(db, alert_id) == [
        ("acknowledged", "maria", ""),
        ("resolved", "li", "refunded by phone, ticket 881"),
    ]


async def test_resolve_open_alert_directly(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    alert_id = await add_alert(db, "ORDER-3")

    assert (await resolve(pool, alert_id, actor="li", note="duplicate of #1")).status == "resolved"
    assert await events(db, alert_id) == [("resolved", "li", "duplicate of #1")]


async def test_acknowledge_wrong_state_raises_and_changes_nothing(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    acked = await add_alert(db, "ORDER-A", status="acknowledged")
    resolved = await add_alert(db, "ORDER-R", status="resolved")

    with pytest.raises(AlertStateError, match=f"alert {acked} is acknowledged: only an alert that is open"):
        await acknowledge(pool, acked, actor="maria", note="")
    with pytest.raises(AlertStateError, match=f"alert {resolved} is resolved"):
        await acknowledge(pool, resolved, actor="maria", note="")
    with pytest.raises(AlertStateError, match="open or acknowledged can be resolved"):
        await resolve(pool, resolved, actor="maria", note="again")

    statuses = await db.fetch("SELECT status FROM alerts ORDER BY id")
    assert [r["status"] for r in statuses] == ["acknowledged", "resolved"]
    assert await db.fetchval("SELECT count(*) FROM alert_events") == 0


async def test_acknowledge_unknown_id_raises_not_found(pool: asyncpg.Pool) -> None:
    with pytest.raises(AlertNotFound, match="no alert with id 424242") as raised:
        await acknowledge(pool, 424242, actor="maria", note="")
    assert isinstance(raised.value, OttreconError)
    with pytest.raises(AlertNotFound):
        await resolve(pool, 424242, actor="maria", note="gone")


async def test_resolve_without_note_or_actor_raises(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    alert_id = await add_alert(db, "ORDER-N")

    with pytest.raises(AuditInfoMissing, match="a note is required"):
        await resolve(pool, alert_id, actor="maria", note="   ")
    with pytest.raises(AuditInfoMissing, match="an actor is required"):
        await acknowledge(pool, alert_id, actor="", note="seen")

    assert await db.fetchval("SELECT status FROM alerts WHERE id = $1", alert_id) == "open"
    assert await db.fetchval("SELECT count(*) FROM alert_events") == 0


async def test_list_alerts_filters_by_status_and_kind(db: asyncpg.Connection, pool: asyncpg.Pool) -> None:
    old = await add_alert(db, "ORDER-OLD", seen_minutes_ago=30)
    new = await add_alert(db, "ORDER-NEW", kind="amount_mismatch", seen_minutes_ago=1)
    acked = await add_alert(db, "ORDER-ACK", status="acknowledged", seen_minutes_ago=10)
    done = await add_alert(db, "ORDER-DONE", status="resolved", seen_minutes_ago=5)

    assert [a.id for a in await list_alerts(pool)] == [new, acked, old]  # not resolved, newest first
    assert [a.id for a in await list_alerts(pool, status="open")] == [new, old]
    assert [a.id for a in await list_alerts(pool, status="resolved")] == [done]
    assert [a.id for a in await list_alerts(pool, kind="unpaid")] == [acked, old]
    assert [a.id for a in await list_alerts(pool, status="open", kind="amount_mismatch")] == [new]
    assert [a.id for a in await list_alerts(pool, limit=1)] == [new]
    with pytest.raises(UnknownAlertStatus, match="unknown alert status 'closed'"):
        await list_alerts(pool, status="closed")


async def test_format_alert_table_shows_money_and_neutralises_control_characters(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    small = await add_alert(db, "ORDER-1", 5, seen_minutes_ago=2)
    large = await add_alert(db, "ORD\x1b[31mER-2", 123456789, merchant_id=OTHER_MERCHANT, seen_minutes_ago=1)

    table = format_alert_table(await list_alerts(pool))

    header, first, second = table.splitlines()
    assert header.split() == ["ID", "KIND", "MERCHANT", "ORDER", "AT", "RISK", "STATUS", "FIRST", "SEEN", "NOTIFIED"]
    assert first.split()[:7] == [str(large), "unpaid", OTHER_MERCHANT, "ORD?[31mER-2", "1,234,567.89", "CAD", "open"]
    assert second.split()[:7] == [str(small), "unpaid", MERCHANT, "ORDER-1", "0.05", "CAD", "open"]
    assert first.rstrip().endswith(" -") and "\x1b" not in table
    # Amounts are right-aligned so that their cents line up.
    assert first.index("1,234,567.89 CAD") + len("1,234,567.89 CAD") == second.index("0.05 CAD") + len("0.05 CAD")
    assert format_alert_table([]) == "no alerts\n"


async def test_format_alert_table_shows_money_in_the_configured_currency(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    # One money formatter for the console, the CLI and alert texts: integer cents with the currency, never "$".
    await add_alert(db, "ORDER-1", 123450, seen_minutes_ago=2)
    table = format_alert_table(await list_alerts(pool), currency="USD")
    assert "1,234.50 USD" in table and "$" not in table
