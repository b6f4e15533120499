"""`ottrecon check-config`: every variable of every process validated, then Postgres and Redis reached."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ottrecon import logs
from ottrecon.api.settings import ApiSettings
from ottrecon.commands.env import require
from ottrecon.commands.processes import PROCESSES
from ottrecon.config import url_problem
from ottrecon.errors import ConfigError, MigrationError
from ottrecon.migrations import check_schema
from ottrecon.redis_persistence import probe
from webhook.settings import WebhookSettings
from worker.settings import WorkerSettings

# Processes that refuse to run on a database whose schema is not this code's.
_NEEDS_SCHEMA = frozenset({"worker", "api"})
# Variables with these prefixes belong to ottrecon; one that no process reads is most likely a typo.
_OWN_PREFIXES = ("OTTRECON_", "OTTPAY_")
# Read by the test suite and scripts/, never by a process: not worth a warning.
_NOT_PROCESS_VARIABLES = frozenset({"OTTRECON_TEST_REDIS_DB", "OTTRECON_PG_PROBE_PORT", "OTTRECON_REDIS_PROBE_PORT"})
# A server that has not answered in this long counts as unreachable.
REACH_TIMEOUT_S = 5.0
_PROCESS_SETTINGS: dict[str, Callable[[Mapping[str, str]], object]] = {
    "web": WebhookSettings.from_env,
    "worker": WorkerSettings.from_env,
    "api": ApiSettings.from_env,
}


@dataclass
class Report:
    """What check-config found: configuration problems, unreachable services, and warnings."""

    config_problems: list[str] = field(default_factory=list)
    service_problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The servers that were tried ("PostgreSQL at host:port"), answering or not.
    reached: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """2 for invalid configuration (as every command), 1 when only the servers let it down, else 0."""
        return 2 if self.config_problems else 1 if self.service_problems else 0


class _ReadRecorder(Mapping[str, str]):
    """The environment, remembering every variable a settings class looked at."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self._env[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def check_variables(env: Mapping[str, str], processes: Sequence[str], report: Report) -> None:
    """Validate the variables of each process with the very settings code that process runs."""
    recorder = _ReadRecorder(env)
    level_problem = logs.level_problem(recorder.get("LOG_LEVEL", "INFO"))
    if level_problem:
        report.config_problems.append(level_problem)
    settings: dict[str, object] = {}
    for process in PROCESSES:
        try:
            if process == "migrate":
                require(recorder, "DATABASE_URL")
            else:
                settings[process] = _PROCESS_SETTINGS[process](recorder)
        except ConfigError as exc:
            if process in processes:
                report.config_problems.append(f"{process}: {str(exc).removeprefix('invalid configuration: ')}")
    worker = settings.get("worker")
    if "worker" in processes and isinstance(worker, WorkerSettings):
        report.config_problems += [f"worker: {problem}" for problem in payment_problems(worker)]
    report.warnings += port_clashes({p: s for p, s in settings.items() if p in processes})
    # Every process is read (above) even when only some are checked, so that a variable meant for
    # another process on the same host is not taken for a typo.
    unread = sorted(
        name
        for name in env
        if name.startswith(_OWN_PREFIXES) and name not in recorder.read and name not in _NOT_PROCESS_VARIABLES
    )
    report.warnings += [f"{name} is set but no ottrecon process reads it (a misspelt name?)" for name in unread]


def payment_problems(worker: WorkerSettings) -> list[str]:
    """What the worker's own start accepts but makes payments fail one by one later (ottrecon/payments/submitter.py):
    a merchant with an operator id but no sign key (its requests cannot be signed), and no callback URL while
    payments are enabled (ACTIVEPAY requires call_back_url)."""
    problems = [
        f"OTTPAY_OPERATORS gives {merchant_id} an operator id but OTTPAY_MERCHANTS has no sign key for it: "
        "its payments would all fail"
        for merchant_id in sorted(worker.operators)
        if not worker.merchants.keys_for(merchant_id)
    ]
    if worker.operators and not worker.callback_url:
        problems.append(
            "OTTRECON_CALLBACK_URL is not set while OTTPAY_OPERATORS enables payments: every ACTIVEPAY would fail "
            "(it is the receiver's public URL, sent to OTT Pay as call_back_url)"
        )
    return problems


def port_clashes(settings: Mapping[str, object]) -> list[str]:
    """Ports two of the checked processes would both listen on (a clash when they share a host)."""
    ports: dict[int, list[str]] = {}
    for name, value in _listening_ports(settings):
        if value:
            ports.setdefault(value, []).append(name)
    return [
        f"{' and '.join(names)} are {'both' if len(names) == 2 else 'all'} {port}: "
        "processes sharing a host cannot all listen on it"
        for port, names in sorted(ports.items())
        if len(names) > 1
    ]


def _listening_ports(settings: Mapping[str, object]) -> Iterator[tuple[str, int]]:
    web, worker, api = settings.get("web"), settings.get("worker"), settings.get("api")
    if isinstance(web, WebhookSettings):
        yield "PORT", web.port
        yield "WEB_METRICS_PORT", web.metrics_port
    if isinstance(worker, WorkerSettings):
        yield "WORKER_METRICS_PORT", worker.metrics_port
    if isinstance(api, ApiSettings):
        yield "API_PORT", api.port


async def check_services(env: Mapping[str, str], processes: Sequence[str], report: Report) -> None:
    """Reach Postgres (and check its schema where a process needs it) and Redis, each within a time limit."""
    checks: list[Awaitable[str | None]] = []
    # A URL with the wrong scheme is already a configuration problem: trying it would only add noise.
    database_url = env.get("DATABASE_URL", "").strip()
    if url_problem("DATABASE_URL", database_url):
        database_url = ""
    if database_url and {"migrate", "worker", "api"} & set(processes):
        checks.append(_postgres_problem(database_url, needs_schema=bool(_NEEDS_SCHEMA & set(processes))))
        report.reached.append(f"PostgreSQL at {_where(database_url)}")
    redis_url = env.get("REDIS_URL", "").strip()
    if url_problem("REDIS_URL", redis_url):
        redis_url = ""
    if redis_url and {"web", "worker", "api"} & set(processes):
        checks.append(_redis_problem(redis_url, report))
        report.reached.append(f"Redis at {_where(redis_url)}")
    report.service_problems += [problem for problem in await asyncio.gather(*checks) if problem]


def _where(url: str) -> str:
    """host:port of a server URL: enough to find it, never its password."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 'default port'}"
    except ValueError:
        return "the configured address"


async def _postgres_problem(url: str, *, needs_schema: bool) -> str | None:
    where = f"PostgreSQL at {_where(url)}"
    try:
        conn = await asyncpg.connect(url, timeout=REACH_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        # The class name only: asyncpg's messages may quote the URL or the user's name.
        return f"{where} cannot be reached ({exc.__class__.__name__})"
    try:
        await asyncio.wait_for(conn.fetchval("SELECT 1"), REACH_TIMEOUT_S)
        if needs_schema:
            await check_schema(conn)
    except MigrationError as exc:
        return f"{where}: {exc}"
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{where} does not answer queries ({exc.__class__.__name__})"
    finally:
        await conn.close(timeout=REACH_TIMEOUT_S)
    return None


async def _redis_problem(url: str, report: Report) -> str | None:
    where = f"Redis at {_where(url)}"
    try:
        client = Redis.from_url(url, socket_timeout=REACH_TIMEOUT_S, socket_connect_timeout=REACH_TIMEOUT_S)
    except ValueError as exc:
        return f"{where}: REDIS_URL is not a redis:// URL ({exc.__class__.__name__})"
    try:
        await client.ping()
        persistence = await probe(client)
    except (RedisError, OSError, TimeoutError) as exc:
        return f"{where} cannot be reached ({exc.__class__.__name__})"
    finally:
        await client.aclose(close_connection_pool=True)
    # A warning, not a problem: the processes run on such a Redis too (and warn); the operator decides
    # (docs/decisions/0021-redis-persistence-is-visible.md).
    if persistence.volatile:
        report.warnings.append(
            f"{where}: redis is volatile (mode {persistence.mode}), it can lose {persistence.loss_window}; "
            "set appendonly yes and appendfsync always"
        )
    elif not persistence.durable:
        report.warnings.append(
            f"{where}: redis does not fsync every write (mode {persistence.mode}), "
            f"it can lose {persistence.loss_window}"
        )
    return None


def check(env: Mapping[str, str], processes: Sequence[str]) -> Report:
    """The whole check: the variables, then every server whose URL is set (even if other variables are wrong)."""
    report = Report()
    check_variables(env, processes, report)
    asyncio.run(check_services(env, processes, report))
    return report


def problems_message(report: Report, processes: Sequence[str]) -> str:
    """One message naming every problem and every warning."""
    problems = report.config_problems + report.service_problems
    lines = [f"{len(problems)} problem(s) for {', '.join(processes)}:", *(f"  - {p}" for p in problems)]
    return "\n".join(lines + warning_lines(report))


def warning_lines(report: Report) -> list[str]:
    return [f"  warning: {warning}" for warning in report.warnings]
