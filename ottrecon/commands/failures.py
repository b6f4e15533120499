"""What an operator reads when a command fails: one line and a documented exit code, never a traceback or a secret.

Exit codes (README "Exit codes"): 0 done; 1 the operation failed (a server unreachable or refusing, a file that
cannot be written, an export cut short); 2 the command line or the configuration is wrong; 70 an error nobody
anticipated, i.e. a bug (sysexits' EX_SOFTWARE), whose traceback LOG_LEVEL=DEBUG shows.
"""

from __future__ import annotations

import sys

from ottrecon.errors import ConfigError, OttreconError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUG = 70


def describe(exc: Exception) -> tuple[int, str]:
    """The exit code and the one line for an error that ended a command.

    Driver errors are named by class: their messages may quote a server URL, password included. Postgres's own
    answers (a role or a database that does not exist, a failed migration) are quoted, since they say what to fix.
    """
    name = exc.__class__.__name__
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, OttreconError):
        return EXIT_FAILED, str(exc)
    if _is(exc, "redis.exceptions", "RedisError"):
        return EXIT_FAILED, f"Redis unavailable ({name})"
    if _is(exc, "asyncpg", "PostgresError"):
        return EXIT_FAILED, f"PostgreSQL refused: {exc} ({name})"
    if _is(exc, "asyncpg", "InterfaceError"):
        return EXIT_FAILED, f"Postgres unavailable ({name})"
    if isinstance(exc, BrokenPipeError):
        return EXIT_FAILED, "the output was closed before the command finished: what it wrote is incomplete"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return EXIT_FAILED, f"{where}{exc.strerror or name}"
    return EXIT_BUG, f"unexpected error ({name}): a bug, please report it; LOG_LEVEL=DEBUG shows the traceback"


def _is(exc: Exception, module: str, name: str) -> bool:
    # Without importing the driver: an error can only come from a module that is already loaded.
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(exc, getattr(loaded, name))
