"""The receiver's exception tree; each docstring is the default message."""

from __future__ import annotations


class WebhookError(Exception):
    """The ottrecon receiver failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(WebhookError):
    """The receiver's configuration is missing or invalid."""


class QueueUnavailable(WebhookError):
    """Redis did not confirm the enqueue; the callback was not kept."""
