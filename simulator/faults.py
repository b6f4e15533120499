"""Injected gateway faults (SIM_FAULTS) and the one seeded random source that decides when they fire."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Faults:
    """Fault settings. Names ending in _ms/_s are durations; every other one is a probability 0..1."""

    latency_ms: int = 0
    timeout: float = 0.0
    error_5xx: float = 0.0
    processing: float = 0.0
    processing_delay_s: float = 2.0
    drop_callback: float = 0.0
    duplicate_callback: float = 0.0
    reorder_callback: float = 0.0
    reorder_delay_s: float = 2.0
    amount_mismatch: float = 0.0


FAULT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Faults))


def parse_faults(text: str) -> tuple[Faults, list[str]]:
    """Parse ``name=value[,name=value…]`` into Faults; return it with every problem found.

    Problems name the entry and the rule broken; the text holds no secrets, so values are shown.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, sep, raw = (part.strip() for part in entry.partition("="))
        if not sep or name not in FAULT_NAMES:
            problems.append(f"SIM_FAULTS: unknown fault {entry!r} (known: {', '.join(FAULT_NAMES)})")
            continue
        value = _fault_value(name, raw)
        if name in values:
            problems.append(f"SIM_FAULTS: {name} is given twice")
        elif value is None:
            problems.append(f"SIM_FAULTS: {name} {_RULES[_kind(name)]}, got {raw!r}")
        values[name] = value
    return Faults(**{name: value for name, value in values.items() if value is not None}), problems


_RULES = {"ms": "must be a whole number of milliseconds >= 0", "s": "must be seconds >= 0", "p": "must be 0..1"}


def _kind(name: str) -> str:
    return "ms" if name.endswith("_ms") else "s" if name.endswith("_s") else "p"


def _fault_value(name: str, raw: str) -> float | int | None:
    kind = _kind(name)
    if kind == "ms":
        return int(raw) if raw.isascii() and raw.isdigit() else None
    number = parse_number(raw)
    if number is None or number < 0 or (kind == "p" and number > 1):
        return None
    return number


def parse_number(raw: str) -> float | None:
    """A finite float from text, or None (float() alone would accept "nan" and "inf")."""
    try:
        number = float(raw)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class Dice:
    """The simulator's only source of randomness: one random.Random(seed), drawn in call order.

    A draw is taken only for probabilities strictly between 0 and 1, so 0 and 1 are certain and
    the same seed and the same sequence of requests always give the same faults. Concurrent
    requests are served in arrival order, which the network may change from run to run.
    """

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._rng = random.Random(seed)

    def reseed(self) -> None:
        """Start the sequence again from the seed (used by /sim/reset)."""
        self._rng = random.Random(self._seed)

    def chance(self, probability: float) -> bool:
        """True with the given probability."""
        if probability <= 0:
            return False
        if probability >= 1:
            return True
        return self._rng.random() < probability

    def fraction(self) -> float:
        """A uniform draw in [0, 1)."""
        return self._rng.random()
