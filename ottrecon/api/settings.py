"""API configuration, read once from the environment by the composition root."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ottpay.keys import parse_operator_ids
from ottrecon.config import EnvReader, url_problem
from ottrecon.console.errors import ConsoleConfigError
from ottrecon.console.settings import ConsoleSettings
from ottrecon.errors import ConfigError

# A token shorter than this is guessable; `python -c "import secrets; print(secrets.token_urlsafe(32))"`.
MIN_TOKEN_LENGTH = 24


@dataclass(frozen=True)
class ApiSettings:
    """The payments API needs the database, the queue and the tokens; it holds no sign keys."""

    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    # SHA-256 digests of the accepted bearer tokens, by client name; the tokens themselves are not kept.
    token_digests: Mapping[str, bytes] = field(repr=False)
    # Merchants that may take payments (those with an operator id; the worker holds their keys).
    merchant_ids: frozenset[str] = frozenset()
    port: int = 8081
    # Internal only: bind to loopback unless told otherwise.
    host: str = "127.0.0.1"
    # How long POST waits for the gateway's answer before replying with the current state.
    wait_s: float = 8.0
    # The finance console under /console/ (optional: without users it only says it is not configured).
    console: ConsoleSettings = field(default_factory=ConsoleSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ApiSettings:
        """Build settings from environment variables, reporting every problem in one ConfigError."""
        problems: list[str] = []
        required = {name: env.get(name, "").strip() for name in ("DATABASE_URL", "REDIS_URL", "OTTRECON_API_TOKENS")}
        problems += [f"{name} is not set" for name, value in required.items() if not value]
        problems += [problem for name, value in required.items() if (problem := url_problem(name, value))]
        digests: dict[str, bytes] = {}
        try:
            digests = parse_tokens(required["OTTRECON_API_TOKENS"]) if required["OTTRECON_API_TOKENS"] else {}
        except ValueError as exc:
            problems.append(f"OTTRECON_API_TOKENS: {exc}")
        merchant_ids: frozenset[str] = frozenset()
        try:
            merchant_ids = frozenset(parse_operator_ids(env.get("OTTPAY_OPERATORS", "")))
        except ValueError as exc:
            problems.append(f"OTTPAY_OPERATORS: {exc}")
        if not merchant_ids and "OTTPAY_OPERATORS: " not in " ".join(problems):
            problems.append("OTTPAY_OPERATORS is not set (MID=OPERATOR_ID for each merchant taking payments)")
        port = EnvReader(env, problems).port("API_PORT", cls.port)
        wait_text = env.get("OTTRECON_API_WAIT_SECONDS", "").strip() or str(cls.wait_s)
        try:
            wait_s = float(wait_text)
        except ValueError:
            problems.append(f"OTTRECON_API_WAIT_SECONDS must be a number, got {wait_text!r}")
            wait_s = cls.wait_s
        console = ConsoleSettings()
        try:
            console = ConsoleSettings.from_env(env)
        except ConsoleConfigError as exc:
            problems += exc.problems
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return cls(
            database_url=required["DATABASE_URL"],
            redis_url=required["REDIS_URL"],
            token_digests=digests,
            merchant_ids=merchant_ids,
            port=port,
            host=env.get("API_HOST", "").strip() or cls.host,
            wait_s=wait_s,
            console=console,
        )


def parse_tokens(text: str) -> dict[str, bytes]:
    """Parse ``[name:]token[,…]`` into SHA-256 digests by client name; never echoes a token."""
    digests: dict[str, bytes] = {}
    problems = []
    for position, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        name, _sep, token = entry.rpartition(":") if ":" in entry else ("", "", entry)
        name = name.strip() or f"client{position}"
        if len(token) < MIN_TOKEN_LENGTH:
            problems.append(f"entry {position} ({name}): token must be at least {MIN_TOKEN_LENGTH} characters")
            continue
        digests[name] = hashlib.sha256(token.encode()).digest()
    if problems:
        raise ValueError("; ".join(problems))
    return digests
