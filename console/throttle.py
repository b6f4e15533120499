"""Sign-in throttling: too many failed passwords for one user name or from one address lock it out.

Kept in the api process's memory: a restart forgets it, and each api process counts on its own
(the console is meant to run on one internal api process). Every failure is also slowed down by
the login handler, so guessing stays slow even below the limits.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

# Failures within WINDOW_S that lock a user name or an address until the oldest one ages out.
USER_LIMIT = 5
ADDRESS_LIMIT = 20
WINDOW_S = 15 * 60
# Bounds memory under a flood of made-up user names: the oldest keys are forgotten first.
MAX_KEYS = 10_000


class LoginThrottle:
    """Counts failed sign-ins per user name and per client address in a sliding window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, user: str, address: str) -> int:
        """Seconds until sign-in is allowed again for this user and address (0: allowed now)."""
        now = self._clock()
        waits = [
            self._wait(key, limit, now) for key, limit in ((f"u:{user}", USER_LIMIT), (f"a:{address}", ADDRESS_LIMIT))
        ]
        return max(waits)

    def failed(self, user: str, address: str) -> None:
        now = self._clock()
        for key in (f"u:{user}", f"a:{address}"):
            times = self._failures.pop(key, deque())
            times.append(now)
            self._failures[key] = times  # re-inserted: the dict stays ordered oldest-touched first
        while len(self._failures) > MAX_KEYS:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, user: str) -> None:
        # The address keeps its count: one valid account must not reset guessing at others.
        self._failures.pop(f"u:{user}", None)

    def _wait(self, key: str, limit: int, now: float) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if len(times) < limit:
            return 0
        return max(1, int(times[0] + WINDOW_S - now + 0.999))
