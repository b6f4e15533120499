"""A whole ottrecon of its own for fault injection: Postgres, Redis, receiver and workers as real processes.

Everything runs on loopback under one temporary directory: a Postgres cluster (port 55400-55499) and
a redis-server (port 56300-56399) started from the installed binaries, never the developer's
servers, plus `ottrecon web` and `ottrecon worker` children. Every process is ended by its own PID
and the directory is removed when the cluster stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import MERCHANT, OLD_KEY

PG_PORTS = range(55400, 55500)
REDIS_PORTS = range(56300, 56400)
DB_NAME = "chaos"


def free_port(candidates: Sequence[int]) -> int:
    """The first port of candidates nothing listens on (another chaos run may hold the ones before)."""
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {candidates[0]}-{candidates[-1]}")


def ephemeral_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def pg_bin() -> Path:
    """The directory of the server binaries (Debian keeps them off PATH, one directory per version)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return versions[-1]


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class Cluster:
    """Handles on every process; start()/stop() bracket a chaos run."""

    root: Path
    pg_port: int = 0
    redis_port: int = 0
    web_port: int = 0
    redis_config: tuple[str, ...] = ("--appendonly", "yes", "--appendfsync", "always")
    redis_dir: Path | None = None
    redis: subprocess.Popen[bytes] | None = None
    web: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_env_extra: dict[str, str] = field(default_factory=dict)
    _logs: list[Path] = field(default_factory=list)

    # ------------------------------------------------------------------ URLs and environment

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{DB_NAME}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def env(self, **extra: str) -> dict[str, str]:
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("OTTRECON_", "OTTPAY_", "DATABASE_", "REDIS_"))
        }
        return (
            base
            | {
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY}",
                "WEB_METRICS_PORT": "0",
                "WORKER_METRICS_PORT": "0",
                "LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
            | extra
        )

    # ------------------------------------------------------------------ Postgres

    @property
    def pg_data(self) -> Path:
        return self.root / "pg"

    def start_postgres(self) -> None:
        """initdb (first time) and start; waits until it accepts connections."""
        bin_dir = pg_bin()
        if not (self.pg_data / "PG_VERSION").exists():
            self.pg_data.mkdir(mode=0o700)
            (self.root / "pgsock").mkdir(exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(self.pg_data, "postgres")
                shutil.chown(self.root / "pgsock", "postgres")
            subprocess.run(
                [
                    *_as_postgres([str(bin_dir / "initdb"), "-D", str(self.pg_data), "-A", "trust", "-U", "postgres"]),
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
                check=True,
                capture_output=True,
            )
        options = f"-p {self.pg_port} -k {self.root / 'pgsock'} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = self.root / "postgres.log"
        if os.geteuid() == 0 and not log.exists():
            log.touch()
            shutil.chown(log, "postgres")
        subprocess.run(
            [
                *_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(self.pg_data), "-l", str(log), "-w", "-t", "30"]),
                "-o",
                options,
                "start",
            ],
            check=True,
            capture_output=True,
        )

    def stop_postgres(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(self.pg_data), "-m", mode, "-w", "-t", "30", "stop"]),
            check=False,
            capture_output=True,
        )

    def create_database(self) -> None:
        subprocess.run(
            [
                str(pg_bin() / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg_port),
                "-U",
                "postgres",
                "-Xq",
                "-c",
                f"CREATE DATABASE {DB_NAME}",
            ],
            check=True,
            capture_output=True,
        )
        self._run_cli("migrate")

    # ------------------------------------------------------------------ Redis

    def start_redis(self, *config: str, fresh: bool = False) -> None:
        """Start redis-server in the foreground (a child: SIGKILL reaches it); fresh: a new, empty data dir."""
        if config:
            self.redis_config = tuple(config)
        if fresh or self.redis_dir is None:
            self.redis_dir = Path(tempfile.mkdtemp(prefix="redis-", dir=self.root))
        command = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.redis_dir)]
        self.redis = self._popen([*command, "--save", "", *self.redis_config], "redis", None)
        wait_port(self.redis_port, 20, self.redis)

    def kill_redis(self) -> None:
        kill(self.redis, signal.SIGKILL)

    # ------------------------------------------------------------------ ottrecon processes

    def start_web(self) -> None:
        env = self.env(PORT=str(self.web_port), HOST="127.0.0.1")
        self.web = self._spawn("web", env)
        wait_port(self.web_port, 30, self.web)

    def kill_web(self) -> None:
        kill(self.web, signal.SIGKILL)

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = self._spawn("worker", self.env(**self.worker_env_extra))
        self.workers.append(worker)
        return worker

    def living_workers(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is None]

    def exited_on_their_own(self) -> list[int]:
        """Exit codes of processes that ended without being killed by us (each one is a failure to heal)."""
        processes = [p for p in (self.web, *self.workers) if p is not None]
        return [p.returncode for p in processes if p.poll() is not None and p.returncode != -signal.SIGKILL]

    def stop_ottrecon(self) -> None:
        for process in (*self.workers, self.web):
            kill(process, signal.SIGTERM, wait_s=30)
        self.workers.clear()
        self.web = None

    def _spawn(self, command: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return self._popen([sys.executable, "-m", "ottrecon.cli", command], command, env)

    def _popen(self, args: list[str], name: str, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        log = self.open_log(name)
        try:
            return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        finally:
            os.close(log)

    def _run_cli(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "ottrecon.cli", *args], env=self.env(), check=True, capture_output=True)

    def open_log(self, name: str) -> int:
        path = self.root / f"{name}-{len(self._logs)}.log"
        self._logs.append(path)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log_tails(self, lines: int = 8) -> str:
        """The last warnings and errors of every process, shortened (for a failed scenario's report)."""
        out = []
        for path in self._logs:
            loud = [
                line[:300]
                for line in path.read_text(errors="replace").splitlines()
                if '"level": "error"' in line or '"level": "warning"' in line or "Traceback" in line
            ]
            loud = [line for line in loud if "ottrecon.alerts" not in line][-lines:]
            if loud:
                out.append(f"--- {path.name}\n" + "\n".join(loud))
        return "\n".join(out)

    # ------------------------------------------------------------------ whole cluster

    def start(self, workers: int = 2) -> None:
        self.pg_port = free_port(PG_PORTS)
        self.start_postgres()
        self.create_database()
        self.redis_port = free_port(REDIS_PORTS)
        self.start_redis()
        self.web_port = ephemeral_port()
        self.start_web()
        for _ in range(workers):
            self.start_worker()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_ottrecon()
        kill(self.redis, signal.SIGKILL)
        if self.pg_port and (self.pg_data / "postmaster.pid").exists():
            self.stop_postgres("immediate")


def kill(process: subprocess.Popen[bytes] | None, sig: int, wait_s: float = 10) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def wait_port(port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {process.returncode}")
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout_s} s")


@contextlib.contextmanager
def running_cluster(workers: int = 2, **worker_env: str) -> Iterator[Cluster]:
    """A started cluster under a fresh temporary directory, always stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ottrecon-chaos-"))
    os.chmod(root, 0o755)  # the postgres user must reach its data directory inside
    cluster = Cluster(root=root, worker_env_extra=dict(worker_env))
    try:
        cluster.start(workers)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
