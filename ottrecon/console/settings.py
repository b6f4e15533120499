"""The console's configuration (part of ApiSettings): users, time zones, cookies, currency."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ottrecon.config import EnvReader
from ottrecon.console.client_address import Network, parse_trusted_proxies
from ottrecon.console.errors import ConsoleConfigError
from ottrecon.console.passwords import N, PasswordHash
from ottrecon.money import DEFAULT_CURRENCY

ROLES = ("finance", "viewer")
_USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_TRUE, _FALSE = frozenset({"1", "true", "yes"}), frozenset({"", "0", "false", "no"})


@dataclass(frozen=True)
class ConsoleUser:
    """A person who may sign in; finance may change things, viewer only reads."""

    name: str
    role: str
    password: PasswordHash = field(repr=False)

    @property
    def can_write(self) -> bool:
        return self.role == "finance"


@dataclass(frozen=True)
class ConsoleSettings:
    """Without users the console is not configured and only says so; the API runs either way."""

    users: Mapping[str, ConsoleUser] = field(default_factory=dict, repr=False)
    # Times on the pages; "today" for the default date range.
    display_tz: str = "America/Toronto"
    # The ledger's business dates (the worker's OTTRECON_BUSINESS_TZ), for statement import and reconciling.
    business_tz: str = "America/Toronto"
    # Plain-http local use only: without it the session cookie is Secure and needs https.
    insecure_cookies: bool = False
    currency: str = DEFAULT_CURRENCY
    # Every failed sign-in is answered this much later (not configurable from the environment; tests shorten it).
    failure_delay_s: float = 1.0
    # Proxies whose X-Forwarded-For names the client that the sign-in throttle counts (console/client_address.py).
    trusted_proxies: tuple[Network, ...] = ()
    # scrypt work factor of new and upgraded password hashes (not from the environment; tests lower it).
    password_n: int = N
    # CSV downloads and statement imports running at once, each on its own thread and connection.
    max_offloaded: int = 2

    @property
    def configured(self) -> bool:
        return bool(self.users)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ConsoleSettings:
        """Read the OTTRECON_CONSOLE_* variables; ConsoleConfigError names every problem."""
        problems: list[str] = []
        users: dict[str, ConsoleUser] = {}
        try:
            users = parse_users(env.get("OTTRECON_CONSOLE_USERS", ""))
        except ValueError as exc:
            problems.append(f"OTTRECON_CONSOLE_USERS: {exc}")
        zones = {}
        for name, default in (("OTTRECON_DISPLAY_TZ", cls.display_tz), ("OTTRECON_BUSINESS_TZ", cls.business_tz)):
            zones[name] = env.get(name, "").strip() or default
            if not _zone_exists(zones[name]):
                problems.append(f"{name}: unknown time zone {zones[name]!r}")
        insecure = env.get("OTTRECON_CONSOLE_INSECURE_COOKIES", "").strip().lower()
        if insecure not in _TRUE | _FALSE:
            problems.append("OTTRECON_CONSOLE_INSECURE_COOKIES must be 1 or 0")
        proxies: tuple[Network, ...] = ()
        try:
            proxies = parse_trusted_proxies(env.get("OTTRECON_CONSOLE_TRUSTED_PROXIES", ""))
        except ValueError as exc:
            problems.append(f"OTTRECON_CONSOLE_TRUSTED_PROXIES: {exc}")
        currency = EnvReader(env, problems).currency()
        if problems:
            raise ConsoleConfigError(problems)
        return cls(
            users=users,
            display_tz=zones["OTTRECON_DISPLAY_TZ"],
            business_tz=zones["OTTRECON_BUSINESS_TZ"],
            insecure_cookies=insecure in _TRUE,
            currency=currency,
            trusted_proxies=proxies,
        )


def parse_users(text: str) -> dict[str, ConsoleUser]:
    """Parse ``name:role:hash[,…]``; ValueError names each bad entry by position, never quoting a hash."""
    users: dict[str, ConsoleUser] = {}
    problems = []
    for position, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        name, role, encoded = [*entry.split(":", 2), "", ""][:3]
        label = f"entry {position}"
        if not _USER_NAME.fullmatch(name):
            problems.append(f"{label}: user name must be 1-64 letters, digits or . _ @ -")
            continue
        label = f"{label} ({name})"
        if role not in ROLES:
            problems.append(f"{label}: role must be finance or viewer")
        elif name in users:
            problems.append(f"{label}: listed twice")
        try:
            password = PasswordHash.parse(encoded)
        except ValueError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if role in ROLES and name not in users:
            users[name] = ConsoleUser(name, role, password)
    if problems:
        raise ValueError("; ".join(problems))
    return users


def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
