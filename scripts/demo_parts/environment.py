"""What each child process is given: the demo merchant, every simulator fault, fast clocks, free ports."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .errors import DemoError

# scripts/demo_parts/environment.py -> the repository root, where the children run.
ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
MERCHANT = "DEMO000001"
OPERATOR = "1000000001"
DECLINE_SUFFIX = "0000"  # PASSIVEPAY auth codes ending so are declined by the simulator
# Every fault on at once, with short clocks so the whole rehearsal fits in about a minute.
SIM_ENV = {
    "SIM_FAULTS": "timeout=0.15,error_5xx=0.05,processing=0.2,processing_delay_s=1,"
    "drop_callback=0.3,duplicate_callback=0.3,reorder_callback=0.3,reorder_delay_s=1",
    "SIM_TIMEOUT_HOLD_S": "4",
    "SIM_CALLBACK_RETRY_S": "0.5,1",
    "SIM_AUTOPAY": "fraction=0.8,delay_s=1",
    "SIM_DECLINE_SUFFIX": DECLINE_SUFFIX,
    "SIM_HOST": LOOPBACK,
}
FAST_CLOCKS = {
    "OTTPAY_TIMEOUT_SECONDS": "2",
    "OTTRECON_SWEEP_AFTER_SECONDS": "3",
    "OTTRECON_UNPAID_DEADLINE_SECONDS": "10",
    "OTTRECON_PASSIVEPAY_CODE_TTL_SECONDS": "30",
    "OTTRECON_SUBMIT_BASE_DELAY_SECONDS": "0.3",
    "OTTRECON_SUBMIT_MAX_DELAY_SECONDS": "3",
    "OTTRECON_CRON_EVERY_SECONDS": "1",
}
# Variables a developer's shell (or .env) may hold that must not leak into the demo's processes.
SCRUBBED_PREFIXES = ("OTTPAY_", "OTTRECON_", "SIM_")
SCRUBBED_NAMES = frozenset({"DATABASE_URL", "REDIS_URL", "PORT", "HOST", "API_PORT", "API_HOST", "LOG_LEVEL"})


def with_path(url: str, path: str) -> str:
    """The same server URL with another path (database name, Redis index); credentials kept."""
    return urlunsplit(urlsplit(url)._replace(path=path))


def required_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise DemoError(f'{name} is not set: run `eval "$(scripts/local_services.sh env)"` first (or `make demo`)')
    return value


def ottrecon_command() -> str:
    local = ROOT / ".venv" / "bin" / "ottrecon"
    found = str(local) if local.exists() else shutil.which("ottrecon")
    if found is None:
        raise DemoError("the ottrecon command is not installed: run `make run` or `make test` once")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def base_env() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name not in SCRUBBED_NAMES and not name.startswith(SCRUBBED_PREFIXES)
    } | {"LOG_LEVEL": "WARNING"}


def process_envs(database_url: str, redis_url: str, seed: int, token: str) -> dict[str, dict[str, str]]:
    """Each process gets only what it needs: the receiver has no keys, the API no sign keys."""
    ports = {"sim": free_port(), "web": free_port(), "api": free_port()}
    merchants = {"OTTPAY_MERCHANTS": f"{MERCHANT}={secrets.token_hex(8).upper()}"}
    operators = {"OTTPAY_OPERATORS": f"{MERCHANT}={OPERATOR}"}
    base = base_env()
    return {
        "sim": base | merchants | operators | SIM_ENV | {"SIM_PORT": str(ports["sim"]), "SIM_SEED": str(seed)},
        "web": base | {"REDIS_URL": redis_url, "HOST": LOOPBACK, "PORT": str(ports["web"])},
        "worker": base
        | merchants
        | operators
        | FAST_CLOCKS
        | {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "OTTPAY_BASE_URL": f"http://{LOOPBACK}:{ports['sim']}",
            "OTTRECON_CALLBACK_URL": f"http://{LOOPBACK}:{ports['web']}/ottpay/callback",
        },
        "api": base
        | operators
        | {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "OTTRECON_API_TOKENS": f"demo:{token}",
            "API_HOST": LOOPBACK,
            "API_PORT": str(ports["api"]),
            # A till waits this long for the gateway's answer; short, so Ctrl-C is not held up by open requests.
            "OTTRECON_API_WAIT_SECONDS": "4",
        },
    }
