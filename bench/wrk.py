"""Runs wrk with a Lua script that cycles through pre-built request bodies and reports back as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.support import BenchError, children_cpu_seconds

# Each thread takes every n-th body, so two threads never send the same one; a thread only
# repeats a body after it has sent all of its own. setup() runs in wrk's main Lua state,
# init() and request() in each thread's, done() in the main state again after the run.
_LUA = """
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  bodies, sent = {}, 0
  local index = 0
  for line in io.lines(%(bodies)s) do
    if index %% %(threads)d == id then bodies[#bodies + 1] = line end
    index = index + 1
  end
  count = #bodies
  headers = {["Content-Type"] = "application/json"}
end

function request()
  sent = sent + 1
  return wrk.format("POST", nil, headers, bodies[(sent - 1) %% count + 1])
end

function done(summary, latency, requests)
  local sent_total, duplicates = 0, 0
  for _, thread in ipairs(threads) do
    local thread_sent, thread_count = thread:get("sent"), thread:get("count")
    sent_total = sent_total + thread_sent
    if thread_sent > thread_count then duplicates = duplicates + thread_sent - thread_count end
  end
  local e = summary.errors
  local out = assert(io.open(%(result)s, "w"))
  out:write(string.format(
    '{"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, "p50_us": %%d, ' ..
    '"p90_us": %%d, "p99_us": %%d, "max_us": %%d, "sent": %%d, "duplicates": %%d}',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    sent_total, duplicates))
  out:close()
end
"""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: counts, latency percentiles, and wrk's own CPU use."""

    requests: int  # completed responses, any status
    duration_s: float
    non_2xx: int  # wrk counts statuses >= 400 here; the services send no 1xx/3xx
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    sent: int  # requests written, including those still unanswered when wrk stopped
    duplicates: int  # requests that re-sent a body this run had already sent
    wrk_cpu_s: float

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s

    @property
    def ok(self) -> int:
        """Completed 2xx responses."""
        return self.requests - self.non_2xx

    @property
    def in_flight(self) -> int:
        """Requests written but not answered when wrk stopped (the server may still have handled them)."""
        return max(0, self.sent - self.requests)


def require_wrk() -> str:
    """The path of wrk, or a BenchError saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(
            "wrk is not installed; the receiver benchmark needs it as its load generator.\n"
            "  Debian/Ubuntu: sudo apt-get install -y wrk    macOS: brew install wrk"
        )
    return path


def write_bodies(path: Path, bodies: Iterable[str]) -> int:
    """Write request bodies one per line (the Lua script reads lines); return how many."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for body in bodies:
            if "\n" in body or "\r" in body:
                raise BenchError("a request body contains a line break")
            out.write(body + "\n")
            count += 1
    return count


def run_wrk(
    url: str, bodies_path: Path, workdir: Path, *, threads: int, connections: int, duration_s: int
) -> WrkResult:
    """POST the bodies to url for duration_s seconds, keeping `connections` requests in flight."""
    wrk = require_wrk()
    token = uuid.uuid4().hex[:8]
    result_path = workdir / f"wrk-{token}.json"
    script_path = workdir / f"wrk-{token}.lua"
    # json.dumps of a path is a valid Lua string literal (quotes and backslashes escaped).
    script_path.write_text(
        _LUA % {"bodies": json.dumps(str(bodies_path)), "result": json.dumps(str(result_path)), "threads": threads}
    )
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(script_path), url]
    cpu_before = children_cpu_seconds()
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    wall_s = time.perf_counter() - started
    if proc.returncode != 0 or not result_path.exists():
        raise BenchError(f"wrk failed (status {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    raw = json.loads(result_path.read_text())
    return WrkResult(
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        non_2xx=raw["non_2xx"],
        socket_errors=raw["socket_errors"],
        p50_ms=raw["p50_us"] / 1e3,
        p90_ms=raw["p90_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
        sent=raw["sent"],
        duplicates=raw["duplicates"],
        wrk_cpu_s=(children_cpu_seconds() - cpu_before) if wall_s > 0 else 0.0,
    )
