"""Measured child processes: a minimal environment, start and stop, readiness, CPU time, signals."""

from __future__ import annotations

import http.client
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

from bench.errors import BenchError

_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
# Children run from the repository root, so `python -m bench.…` and `-m ottrecon.cli` resolve there.
REPO_ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def child_env(variables: Mapping[str, str], env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """A minimal environment for a measured process: the variables given plus PATH, HOME and locale.

    Nothing else leaks in from the caller's shell: services run with their code defaults
    (the settings the benchmark reports), and no URL there can send traffic off this machine.
    """
    kept = {name: env[name] for name in _PASSED_THROUGH if name in env}
    return {**kept, **variables}


def ottrecon_command(*args: str) -> list[str]:
    """argv running the `ottrecon` CLI of this checkout (the console script's own entry point,
    ottrecon.cli:main), so the code measured is the working tree's even if the install is stale."""
    return [sys.executable, "-m", "ottrecon.cli", *args]


class Child:
    """A child process writing to a log file; stopped (SIGTERM, then SIGKILL) when the block exits.

    cwd: where it runs (the repository root unless given); `python -m` imports the code found there first.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._argv = list(argv)
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def __enter__(self) -> Child:
        with self.log_path.open("ab") as log:
            self.started_at = time.perf_counter()
            self._proc = subprocess.Popen(
                self._argv,
                cwd=self._cwd,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The child's process id."""
        if self._proc is None:
            raise BenchError(f"{self.name} was not started")
        return self._proc.pid

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ask the process to exit, kill it if it does not within timeout_s; idempotent."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def check_alive(self) -> None:
        """Raise BenchError, with the end of the log, if the process has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            raise BenchError(f"{self.name} exited with status {self._proc.returncode}; log ends:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the (still running) process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        # After the command name: state is field 3, utime field 14, stime field 15 (proc(5)).
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the child's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def wait_http_ok(port: int, path: str, child: Child, timeout_s: float = 30.0) -> None:
    """Poll http://127.0.0.1:port/path until it answers 200; the process dying or the timeout is a BenchError."""
    deadline = time.monotonic() + timeout_s
    while True:
        child.check_alive()
        # http.client, not urllib: urllib would honour an http_proxy variable and leave the machine.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise BenchError(
                f"{child.name} did not answer GET {path} within {timeout_s:.0f}s; log:\n{child.log_tail()}"
            )
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children_cpu_seconds() -> float:
    """CPU time of this process's finished and reaped children (resource.RUSAGE_CHILDREN)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so `finally` blocks clean up on either signal."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
