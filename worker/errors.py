"""The worker's exception tree; each docstring is the default message."""

from __future__ import annotations


class WorkerError(Exception):
    """The ottrecon worker failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(WorkerError):
    """The worker's configuration is missing or invalid."""


class MigrationError(WorkerError):
    """The database schema cannot be migrated or does not match this code."""


class DatabaseUnavailable(WorkerError):
    """Postgres could not be reached or dropped the connection; the work can be retried."""
