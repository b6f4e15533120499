"""ottrecon's exception tree, shared by every process; each docstring is the default message."""

from __future__ import annotations


class OttreconError(Exception):
    """ottrecon failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ProblemsError(OttreconError):
    """Several things are wrong; `problems` names each of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ConfigError(OttreconError):
    """The configuration is missing or invalid."""


class MigrationError(OttreconError):
    """The database schema cannot be migrated or does not match this code."""


class DatabaseUnavailable(OttreconError):
    """Postgres could not be reached or dropped the connection; the work can be retried."""
