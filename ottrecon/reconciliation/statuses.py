"""The reconciliation vocabulary: ledger and statement statuses, alert statuses and kinds. Pure.

The database holds the same words (ledger_recon_status_check, alerts_status_check, the reconciler's SQL);
tests/integration/test_status_vocabulary.py holds the two to each other.
"""

from __future__ import annotations

from enum import StrEnum


class ReconStatus(StrEnum):
    """What reconciling a (merchant, order) key found (docs/RECONCILIATION.md)."""

    MATCHED = "matched"
    PENDING = "pending"
    UNPAID = "unpaid"
    AMOUNT_MISMATCH = "amount_mismatch"
    ORPHAN_PAYMENT = "orphan_payment"
    DUPLICATE_PAYMENT = "duplicate_payment"
    PAID_AFTER_FLAGGED = "paid_after_flagged"
    MISSING_CALLBACK = "missing_callback"
    REVIEW = "review"  # the order is in review: what the gateway said about it needs a person
    NOT_IN_LEDGER = "not_in_ledger"


# Settled or still waiting: every other status is a mismatch, and an alert of that kind.
QUIET = frozenset({ReconStatus.MATCHED, ReconStatus.PENDING})


class StatementStatus(StrEnum):
    """How a ledger row compares with the settlement statements covering it (NULL: none covers it yet)."""

    MATCHED = "matched"
    NOT_IN_STATEMENT = "not_in_statement"
    NOT_IN_LEDGER = "not_in_ledger"
    AMOUNT_DIFFERS = "amount_differs"
    DUPLICATE_SETTLEMENT = "duplicate_settlement"
    REFUND_DIFFERS = "refund_differs"


# A statement difference needs a person: every statement status but matched.
DIFFERENCES = frozenset(StatementStatus) - {StatementStatus.MATCHED}


class AlertStatus(StrEnum):
    """An alert's state, in the order the console's tabs show them."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertKind(StrEnum):
    """What an alert is about: a ledger mismatch (its recon_status) or a statement difference."""

    UNPAID = "unpaid"
    AMOUNT_MISMATCH = "amount_mismatch"
    ORPHAN_PAYMENT = "orphan_payment"
    DUPLICATE_PAYMENT = "duplicate_payment"
    PAID_AFTER_FLAGGED = "paid_after_flagged"
    MISSING_CALLBACK = "missing_callback"
    REVIEW = "review"
    NOT_IN_LEDGER = "not_in_ledger"
    NOT_IN_STATEMENT = "not_in_statement"
    STATEMENT_AMOUNT_DIFFERS = "statement_amount_differs"
    STATEMENT_REFUND_DIFFERS = "statement_refund_differs"
    DUPLICATE_SETTLEMENT = "duplicate_settlement"
