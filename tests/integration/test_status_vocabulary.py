"""The status words are written twice, in SQL (rank functions, CHECK constraints, partial indexes) and in Python
(the StrEnums of payments/statuses.py and reconciliation/statuses.py): this holds the two to each other, and
the api's OpenAPI description, the console's filters and the SQL fragments to the enums."""

from __future__ import annotations

import re
from enum import StrEnum

import asyncpg
import pytest

from ottpay.errors import EnvelopeError
from ottrecon.api.openapi import openapi_spec
from ottrecon.callbacks import store as callbacks_store
from ottrecon.callbacks.verdicts import KEY_REASONS, RejectReason
from ottrecon.console import filters
from ottrecon.console.pages import alerts as alerts_page
from ottrecon.payments.statuses import (
    ORDER_RANK,
    PAYMENT_RANK,
    Channel,
    OrderStatus,
    PaidSource,
    PaymentKind,
    RefundStatus,
)
from ottrecon.reconciliation import reports
from ottrecon.reconciliation.statuses import DIFFERENCES, QUIET, AlertKind, AlertStatus, ReconStatus


def quoted(sql: str) -> set[str]:
    return set(re.findall(r"'([a-zA-Z_]+)'", sql))


async def test_rank_functions_rank_every_member_as_the_enums_do_and_nothing_else(db: asyncpg.Connection) -> None:
    for function, ranks in (("order_status_rank", ORDER_RANK), ("payment_status_rank", PAYMENT_RANK)):
        got = {s: await db.fetchval(f"SELECT {function}($1)", str(s)) for s in ranks}
        assert got == ranks, function
        assert await db.fetchval(f"SELECT {function}('settled')") is None
    assert list(ORDER_RANK) == list(OrderStatus)
    assert sorted(OrderStatus, key=ORDER_RANK.__getitem__) == list(OrderStatus)  # declared in rank order


@pytest.mark.parametrize(
    ("constraint", "enum"),
    [
        ("refunds_status_check", RefundStatus),
        ("alerts_status_check", AlertStatus),
        ("ledger_recon_status_check", ReconStatus),
        ("orders_kind_check", PaymentKind),
        ("orders_biz_type_check", Channel),
        ("payments_source_check", PaidSource),
    ],
)
async def test_check_constraints_accept_exactly_the_enum(
    db: asyncpg.Connection, constraint: str, enum: type[StrEnum]
) -> None:
    definition = await db.fetchval("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1", constraint)
    assert quoted(definition) == set(enum), definition


async def test_partial_index_predicates_are_the_enums_mismatches(db: asyncpg.Connection) -> None:
    async def predicate(index: str) -> set[str]:
        return quoted(await db.fetchval("SELECT pg_get_indexdef($1::regclass)", index))

    assert await predicate("ledger_recon_status_idx") == QUIET  # WHERE recon_status NOT IN (quiet ones)
    assert await predicate("ledger_statement_status_idx") == DIFFERENCES
    # The reports repeat those predicates as literal SQL, so that the planner can use the indexes.
    assert quoted(reports.NEEDS_A_PERSON) == QUIET | DIFFERENCES


def test_alert_kinds_are_the_ledger_mismatches_and_the_statement_differences() -> None:
    statement_kinds = {"statement_amount_differs" if d == "amount_differs" else d for d in DIFFERENCES}
    statement_kinds = {"statement_refund_differs" if d == "refund_differs" else d for d in statement_kinds}
    assert set(AlertKind) == (set(ReconStatus) - QUIET) | statement_kinds


def test_reject_reasons_include_every_envelope_error_code_and_the_replayable_ones_are_literal_sql() -> None:
    envelope_reasons = {cls.reason for cls in EnvelopeError.__subclasses__()}
    assert set(RejectReason) == envelope_reasons | {"malformed_envelope", "invalid_fields", "unstorable"}
    assert quoted(callbacks_store.KEY_REASONS) == KEY_REASONS


def test_api_description_and_console_filters_offer_exactly_the_enums() -> None:
    spec = openapi_spec()
    payment = spec["components"]["schemas"]["Payment"]["properties"]
    assert payment["status"]["enum"] == list(OrderStatus)
    assert payment["kind"]["enum"] == list(PaymentKind)
    assert payment["biz_type"]["enum"] == list(Channel)
    assert payment["paid_source"]["enum"] == [*PaidSource, None]
    assert spec["components"]["schemas"]["Refund"]["properties"]["status"]["enum"] == list(RefundStatus)
    assert filters.RECON_STATUSES == tuple(ReconStatus)
    assert filters.CHANNELS == tuple(Channel)
    assert alerts_page.KINDS == tuple(AlertKind)
    assert alerts_page.STATUSES == tuple(AlertStatus)
