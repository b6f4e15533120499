"""What each process loads at run time: import-linter reads the source; these read a fresh interpreter's sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Every process starts through the command line (`ottrecon web`, Procfile): what it loads counts as the process's own.
COMMAND_LINE = "ottrecon.cli"


def loaded_after(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after running statement."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_api_process_loads_no_cipher_no_verifier_and_no_worker() -> None:
    # The api holds no sign keys (docs/ARCHITECTURE.md): what it loads cannot decrypt or verify a callback.
    # The `cryptography` library itself is no mark: redis loads it (through PyJWT) in every process; our own
    # code imports it nowhere but ottpay.envelope, which pyproject's import contracts keep out of the api.
    loaded = loaded_after(f"import {COMMAND_LINE}, ottrecon.api.app")
    forbidden = ("worker", "ottpay.envelope", "ottpay.client", "ottrecon.callbacks.verify", "simulator")
    assert [m for m in loaded if m.startswith(forbidden)] == []
    assert "ottrecon.console.app" in loaded  # the console is mounted, so it was checked too


@pytest.mark.parametrize("module", ["webhook.app", "ottrecon.api.app"])
def test_no_process_but_the_worker_loads_the_worker(module: str) -> None:
    loaded = loaded_after(f"import {COMMAND_LINE}, {module}")
    assert [m for m in loaded if m == "worker" or m.startswith("worker.")] == []


def test_receiver_loads_no_cipher_no_database_driver_and_no_domain() -> None:
    loaded = loaded_after(f"import {COMMAND_LINE}, webhook.app")
    domain = ("asyncpg", "ottrecon.db", "ottrecon.callbacks", "ottrecon.payments", "ottrecon.reconciliation")
    # The command line's `pay --kind/--biz-type` choices: enums only, no driver, nothing that can touch a payment.
    vocabulary = ["ottrecon.payments", "ottrecon.payments.statuses"]
    assert [m for m in loaded if m.startswith(domain) and m not in vocabulary] == []


def test_the_worker_loads_no_http_client_before_it_needs_one() -> None:
    # aiohttp's import (about a tenth of a second, TLS contexts included) delayed every worker's first callback;
    # it now loads with the first payment or alert sent (decision 0046).
    loaded = loaded_after(f"import {COMMAND_LINE}, worker.main")
    assert [m for m in loaded if m == "aiohttp" or m.startswith(("aiohttp.", "ottpay.client"))] == []
