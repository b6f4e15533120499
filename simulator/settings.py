"""Gateway simulator configuration, read from the environment by main.run and built directly by tests."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ottpay.keys import MerchantKeys, parse_merchant_keys, parse_operator_ids
from simulator.faults import Faults, parse_faults, parse_number

_ID = re.compile(r"[A-Za-z0-9]{1,32}")
DEFAULT_RETRY_S: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)


class ConfigError(ValueError):
    """The simulator configuration is missing or invalid."""


@dataclass(frozen=True)
class Autopay:
    """Pay this fraction of ACTIVEPAY orders automatically, delay_s after they are created."""

    fraction: float
    delay_s: float


@dataclass(frozen=True)
class SimulatorSettings:
    """Everything the simulator needs. merchants holds secrets; MerchantKeys' repr shows no key."""

    merchants: MerchantKeys
    operators: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8090
    seed: int = 0
    faults: Faults = field(default_factory=Faults)
    timeout_hold_s: float = 30.0
    autopay: Autopay | None = None
    callback_retry_s: tuple[float, ...] = DEFAULT_RETRY_S
    decline_suffix: str = "0000"
    wrong_pin_suffix: str = "9999"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SimulatorSettings:
        """Build settings from environment variables; raise ConfigError listing every problem at once.

        Messages name variables and entries but never contain a sign key.
        """
        problems: list[str] = []
        merchants = MerchantKeys({})
        merchants_text = env.get("OTTPAY_MERCHANTS", "").strip()
        if not merchants_text:
            problems.append("OTTPAY_MERCHANTS is not set (MID=KEY[,MID=KEY…])")
        else:
            try:
                merchants = parse_merchant_keys(merchants_text)
            except ValueError as exc:  # parse_merchant_keys never echoes a key
                problems.append(f"OTTPAY_MERCHANTS: {exc}")
        operators = _operators(env.get("OTTPAY_OPERATORS", ""), merchants, problems)
        faults, fault_problems = parse_faults(env.get("SIM_FAULTS", ""))
        problems.extend(fault_problems)
        port = _integer(env, "SIM_PORT", cls.port, problems, low=1, high=65535)
        seed = _integer(env, "SIM_SEED", cls.seed, problems, low=0, high=2**63)
        hold = _seconds(env, "SIM_TIMEOUT_HOLD_S", cls.timeout_hold_s, problems)
        retry = _retry_schedule(env.get("SIM_CALLBACK_RETRY_S", "").strip(), problems)
        decline = _suffix(env, "SIM_DECLINE_SUFFIX", cls.decline_suffix, problems)
        wrong_pin = _suffix(env, "SIM_WRONG_PIN_SUFFIX", cls.wrong_pin_suffix, problems)
        # Overlapping suffixes would make the answer to one auth code depend on check order.
        if decline.endswith(wrong_pin) or wrong_pin.endswith(decline):
            problems.append("SIM_DECLINE_SUFFIX and SIM_WRONG_PIN_SUFFIX must not be suffixes of each other")
        autopay = _autopay(env.get("SIM_AUTOPAY", "").strip(), problems)
        if problems:
            raise ConfigError("invalid simulator configuration: " + "; ".join(problems))
        host = env.get("SIM_HOST", "").strip() or cls.host
        return cls(merchants, operators, host, port, seed, faults, hold, autopay, retry, decline, wrong_pin)


def _operators(text: str, merchants: MerchantKeys, problems: list[str]) -> dict[str, str]:
    try:
        operators = parse_operator_ids(text)
    except ValueError as exc:
        problems.append(f"OTTPAY_OPERATORS: {exc}")
        return {}
    # Only checked when OTTPAY_MERCHANTS itself parsed, so one mistake is not reported twice.
    unknown = [mid for mid in operators if merchants and mid not in merchants]
    problems.extend(f"OTTPAY_OPERATORS: {mid} is not in OTTPAY_MERCHANTS" for mid in unknown)
    return operators


def _integer(env: Mapping[str, str], name: str, default: int, problems: list[str], *, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if raw.isascii() and raw.isdigit() and low <= int(raw) <= high:
        return int(raw)
    problems.append(f"{name} must be a whole number {low}..{high}, got {raw!r}")
    return default


def _seconds(env: Mapping[str, str], name: str, default: float, problems: list[str]) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    number = parse_number(raw)
    if number is None or number < 0:
        problems.append(f"{name} must be seconds >= 0, got {raw!r}")
        return default
    return number


def _retry_schedule(raw: str, problems: list[str]) -> tuple[float, ...]:
    if not raw:
        return DEFAULT_RETRY_S
    if raw.lower() == "none":
        return ()
    delays = [parse_number(part.strip()) for part in raw.split(",")]
    if any(delay is None or delay < 0 for delay in delays):
        problems.append(f"SIM_CALLBACK_RETRY_S must be 'none' or comma-separated seconds >= 0, got {raw!r}")
        return DEFAULT_RETRY_S
    return tuple(delay for delay in delays if delay is not None)


def _suffix(env: Mapping[str, str], name: str, default: str, problems: list[str]) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if _ID.fullmatch(raw):
        return raw
    problems.append(f"{name} must be 1-32 letters or digits, got {raw!r}")
    return default


def _autopay(raw: str, problems: list[str]) -> Autopay | None:
    if not raw or raw.lower() == "off":
        return None
    values: dict[str, float] = {}
    for entry in (part.strip() for part in raw.split(",")):
        name, _, text = (part.strip() for part in entry.partition("="))
        number = parse_number(text)
        if name not in ("fraction", "delay_s") or name in values or number is None or number < 0:
            problems.append(f"SIM_AUTOPAY: bad entry {entry!r} (expected fraction=0..1,delay_s=SECONDS)")
            return None
        values[name] = number
    if values.get("fraction", 1.0) > 1:
        problems.append("SIM_AUTOPAY: fraction must be 0..1")
        return None
    return Autopay(fraction=values.get("fraction", 1.0), delay_s=values.get("delay_s", 2.0))
