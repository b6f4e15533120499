"""What the fuzzers share: how long they run, and the real processes they attack (`ottrecon web`, `ottrecon api`).

`make test` runs each fuzzer for a bounded number of examples; `make soak` sets OTTRECON_FUZZ=soak
and runs them far longer. The processes are started exactly as an operator starts them, from the
environment, on free loopback ports, and their memory is read from the kernel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings

SOAK = os.environ.get("OTTRECON_FUZZ", "") == "soak"
OTTRECON = str(Path(sys.executable).with_name("ottrecon"))


def fuzz_settings(bounded: int, soak: int) -> settings:
    """Hypothesis settings for a fuzzer: `bounded` examples in `make test`, `soak` in `make soak`.

    No deadline (the processes share two cores with the rest of the suite) and no example database
    (each run explores afresh; a failure prints the example and the seed that found it).
    """
    return settings(
        max_examples=soak if SOAK else bounded,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass
class Process:
    """A running `ottrecon` command: its base URL, pid and log."""

    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    def rss_bytes(self) -> int:
        """Resident memory, from /proc (the process's own view of its heap would miss C allocations)."""
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS in /proc status")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def logged(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running(command: str, env: Mapping[str, str], ready_path: str, port: int, log: Path) -> Iterator[Process]:
    """Start `ottrecon command` with env, wait until GET ready_path answers, stop it with SIGTERM at the end."""
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [OTTRECON, command],
            env={"PATH": os.environ.get("PATH", ""), "LOG_LEVEL": "INFO", **env},
            stdout=out,
            stderr=out,
        )
        process = Process(f"http://127.0.0.1:{port}", popen, log)
        try:
            _wait_ready(process, process.url + ready_path)
            yield process
        finally:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


def _wait_ready(process: Process, url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if not process.alive() or time.monotonic() > deadline:
            raise AssertionError(f"`ottrecon` did not become ready at {url}; it logged:\n{process.logged()}")
        time.sleep(0.1)
