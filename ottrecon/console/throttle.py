"""Sign-in throttling: too many failed passwords for one user name or from one address lock it out.

Kept in the api process's memory: a restart forgets it, and each api process counts on its own
(the console is meant to run on one internal api process). Every failure is also slowed down by
the login handler, so guessing stays slow even below the limits.

An attempt is counted when it starts, before the (slow) password check is awaited, and taken
back only if the password was right: guesses sent all at once are each counted, so at most the
limit of them ever reach the check.
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
    """Counts sign-in attempts not known to have succeeded, per user name and per client address,
    in a sliding window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def begin(self, user: str, address: str) -> int:
        """Start an attempt: seconds to wait if the user or address is locked (nothing counted),
        else 0, and the attempt is counted as a failure until `succeeded` takes it back.

        Check and count happen without an await in between, so concurrent attempts cannot all pass.
        """
        wait = self.retry_after(user, address)
        if not wait:
            self._count(user, address)
        return wait

    def retry_after(self, user: str, address: str) -> int:
        """Seconds until sign-in is allowed again for this user and address (0: allowed now)."""
        now = self._clock()
        waits = [
            self._wait(key, limit, now) for key, limit in ((f"u:{user}", USER_LIMIT), (f"a:{address}", ADDRESS_LIMIT))
        ]
        return max(waits)

    def succeeded(self, user: str, address: str) -> None:
        """The attempt begun for user from address had the right password: forget the user's failures
        and take back this attempt's count for the address."""
        self._failures.pop(f"u:{user}", None)
        # The address keeps its other failures: one valid account must not reset guessing at others.
        times = self._failures.get(f"a:{address}")
        if times:
            times.pop()

    def _count(self, user: str, address: str) -> None:
        now = self._clock()
        for key in (f"u:{user}", f"a:{address}"):
            times = self._failures.pop(key, deque())
            times.append(now)
            self._failures[key] = times  # re-inserted: the dict stays ordered oldest-touched first
        while len(self._failures) > MAX_KEYS:
            del self._failures[next(iter(self._failures))]

    def _wait(self, key: str, limit: int, now: float) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if len(times) < limit:
            return 0
        return max(1, int(times[0] + WINDOW_S - now + 0.999))
