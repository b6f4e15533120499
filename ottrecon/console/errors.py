"""The console's errors (part of ottrecon.errors' tree); each docstring is the default message."""

from __future__ import annotations

from ottrecon.errors import OttreconError, ProblemsError


class ConsoleConfigError(ProblemsError):
    """The console's configuration is invalid."""


class BadFilter(ProblemsError):
    """A filter in the address is not valid."""


class UploadTooLarge(OttreconError):
    """The uploaded file is larger than the console accepts."""


class PageError(OttreconError):
    """The request cannot be done; the page says what happened and what to do."""

    def __init__(self, status: int, title: str, advice: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.advice = advice
