"""What can go wrong when a payment or a refund is asked for; the api maps each to its HTTP answer."""

from __future__ import annotations

from ottrecon.errors import OttreconError, ProblemsError


class InvalidRequest(ProblemsError):
    """The request is not valid."""


class IdempotencyConflict(OttreconError):
    """This Idempotency-Key was already used with a different request."""


class NotFound(OttreconError):
    """No such payment."""


class NotRefundable(OttreconError):
    """The payment cannot be refunded (not paid, or the amount exceeds what is left)."""
