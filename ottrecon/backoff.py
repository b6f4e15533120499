"""Exponential backoff with jitter, for everything that tries again later (payments, refunds, alert delivery). Pure."""

from __future__ import annotations

import random

# 2**30 times any sensible base delay is far past any sensible maximum; capping the exponent keeps
# callers that never give up (alert delivery, days into an outage) from overflowing a float.
MAX_EXPONENT = 30


def backoff(attempts: int, rng: random.Random, *, base_delay_s: float, max_delay_s: float) -> float:
    """The delay after attempt number `attempts`: base * 2**(attempts-1), capped at max, times a jitter of
    half to full, so that workers and orders do not move in step."""
    exponent = min(max(0, attempts - 1), MAX_EXPONENT)
    delay: float = min(max_delay_s, base_delay_s * float(2**exponent))
    return delay * (0.5 + rng.random() / 2)
