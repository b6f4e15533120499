"""What can go wrong when a payment or a refund is asked for; the api maps each to its HTTP answer."""

from __future__ import annotations

from ottrecon.errors import DatabaseUnavailable, OttreconError, ProblemsError


class InvalidRequest(ProblemsError):
    """The request is not valid."""


class IdempotencyConflict(OttreconError):
    """This Idempotency-Key was already used with a different request."""


class NotFound(OttreconError):
    """No such payment."""


class NotRefundable(OttreconError):
    """The payment cannot be refunded (not paid, or the amount exceeds what is left)."""


class AuthCodeUsed(OttreconError):
    """This wallet code was already used for a payment; a scanned code pays once (ask for a fresh code)."""

    def __init__(self, payment_id: str, status: str) -> None:
        super().__init__(
            f"this wallet code (auth_code) was already used for payment {payment_id} (status {status}); "
            "a code pays at most once: look that payment up, or scan a fresh code for a new payment"
        )
        self.payment_id = payment_id


class NotStored(DatabaseUnavailable):
    """The database was unavailable and nothing was stored; retry with the same Idempotency-Key."""


class MaybeStored(DatabaseUnavailable):
    """The database failed while storing: it may have been stored. Retry with the same Idempotency-Key (it answers
    what was stored, or stores it now); never with a new one, which could take the money twice."""
