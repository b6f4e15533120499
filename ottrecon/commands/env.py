"""Reading required variables for the `ottrecon` commands, and the error for a missing one."""

from __future__ import annotations

from collections.abc import Mapping

from ottrecon.errors import ConfigError


class UsageError(ConfigError):
    """Missing or invalid configuration for the chosen command."""


def require(env: Mapping[str, str], *names: str) -> list[str]:
    """The values of the named variables, or one UsageError naming every one that is missing."""
    missing = [name for name in names if not env.get(name, "").strip()]
    if missing:
        raise UsageError("invalid configuration: " + "; ".join(f"{name} is not set" for name in missing))
    return [env[name].strip() for name in names]
