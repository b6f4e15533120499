"""Reading settings from the environment, every problem collected so that one error names them all.

Each process has its own frozen settings class with `from_env` (webhook/settings.py, worker/settings.py,
ottrecon/api/settings.py); they all read through EnvReader, so a port or a number means the same everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ottrecon.money import DEFAULT_CURRENCY

# The schemes each server URL may use (asyncpg's, redis-py's), and how a problem names them. Anything else
# would only fail later, deep in a driver, with a traceback.
URL_SCHEMES: dict[str, tuple[tuple[str, ...], str]] = {
    "DATABASE_URL": (("postgresql", "postgres"), "a postgresql://"),
    "REDIS_URL": (("redis", "rediss", "unix"), "a redis://, rediss:// or unix://"),
}


def url_problem(name: str, value: str) -> str | None:
    """Why a server URL variable is unusable, or None. Never quotes the value: it may hold a password."""
    if name not in URL_SCHEMES or not value:
        return None
    schemes, described = URL_SCHEMES[name]
    scheme, separator, _rest = value.partition("://")
    if separator and scheme.lower() in schemes:
        return None
    return f"{name} must be {described} URL"


# ASCII digits only: str.isdigit also takes '²' and '٣', which int() then refuses with a bare ValueError.
_PORT = re.compile(r"[0-9]{1,5}")
_CURRENCY = re.compile(r"[A-Z]{3}")


class EnvReader:
    """Reads variables, collecting problems instead of failing on the first one."""

    def __init__(self, env: Mapping[str, str], problems: list[str]) -> None:
        self._env = env
        self.problems = problems

    def text(self, name: str, default: str = "") -> str:
        """The trimmed value, or default when unset or blank."""
        return self._env.get(name, "").strip() or default

    def required(self, name: str) -> str:
        """The trimmed value; a problem when it is unset or blank, or a server URL with a wrong scheme."""
        value = self._env.get(name, "").strip()
        if not value:
            self.problems.append(f"{name} is not set")
        elif problem := url_problem(name, value):
            self.problems.append(problem)
        return value

    def port(self, name: str, default: int, *, allow_zero: bool = False) -> int:
        """A TCP port number (1-65535; 0 too when allow_zero, meaning off), default when unset."""
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        lowest = 0 if allow_zero else 1
        if not _PORT.fullmatch(raw) or not lowest <= int(raw) <= 65535:
            what = "a TCP port number or 0" if allow_zero else "a TCP port number"
            self.problems.append(f"{name} must be {what}, got {raw!r}")
            return default
        return int(raw)

    def currency(self) -> str:
        """OTTRECON_CURRENCY, the currency money is shown in (amounts are integer cents of it): ISO 4217, like CAD."""
        currency = self.text("OTTRECON_CURRENCY", DEFAULT_CURRENCY)
        if not _CURRENCY.fullmatch(currency):
            self.problems.append(f"OTTRECON_CURRENCY must be a three-letter ISO 4217 code like CAD, got {currency!r}")
            return DEFAULT_CURRENCY
        return currency

    def number(self, name: str, default: float, *, minimum: float) -> float:
        """A number of at least minimum, default when unset."""
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name} must be a number, got {raw!r}")
            return default
        if value < minimum:
            self.problems.append(f"{name} must be at least {minimum}")
            return default
        return value
