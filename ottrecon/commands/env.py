"""Reading required variables for the `ottrecon` commands, and the error for a missing one."""

from __future__ import annotations

from collections.abc import Mapping

from ottrecon.config import url_problem
from ottrecon.errors import ConfigError


class UsageError(ConfigError):
    """Missing or invalid configuration for the chosen command."""


def require(env: Mapping[str, str], *names: str) -> list[str]:
    """The values of the named variables, or one UsageError naming every one that is missing (or, for a server
    URL, has the wrong scheme)."""
    problems = [f"{name} is not set" for name in names if not env.get(name, "").strip()]
    problems += [p for name in names if (p := url_problem(name, env.get(name, "").strip()))]
    if problems:
        raise UsageError("invalid configuration: " + "; ".join(problems))
    return [env[name].strip() for name in names]
