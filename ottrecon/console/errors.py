"""The console's exception tree; each docstring is the default message."""

from __future__ import annotations


class ConsoleError(Exception):
    """The finance console failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConsoleConfigError(ConsoleError):
    """The console's configuration is invalid."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class BadFilter(ConsoleError):
    """A filter in the address is not valid."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class UploadTooLarge(ConsoleError):
    """The uploaded file is larger than the console accepts."""


class PageError(ConsoleError):
    """The request cannot be done; the page says what happened and what to do."""

    def __init__(self, status: int, title: str, advice: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.advice = advice
