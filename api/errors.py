"""The API's exception tree; each docstring is the default message."""

from __future__ import annotations


class ApiError(Exception):
    """The ottrecon API failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(ApiError):
    """The API's configuration is missing or invalid."""


class InvalidRequest(ApiError):
    """The request is not valid."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class IdempotencyConflict(ApiError):
    """This Idempotency-Key was already used with a different request."""


class NotFound(ApiError):
    """No such payment."""


class NotRefundable(ApiError):
    """The payment cannot be refunded (not paid, or the amount exceeds what is left)."""


class DatabaseUnavailable(ApiError):
    """Postgres could not be reached; nothing was stored."""
