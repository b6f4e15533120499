"""`ottrecon check-config` and `ottrecon --version`, run as an operator runs them: a real subprocess."""

from __future__ import annotations

import uuid
from importlib.metadata import version
from pathlib import Path

import asyncpg

from tests.conftest import MERCHANT, OLD_KEY, with_database
from tests.integration.processes import redis_server
from tests.integration.test_cli import run_cli
from tests.simulator import free_port

GOOD_TOKEN = "ops:" + "t" * 32


def complete_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "OTTPAY_MERCHANTS": f"{MERCHANT}={OLD_KEY}",
        "OTTPAY_OPERATORS": f"{MERCHANT}=1234567890",
        "OTTRECON_API_TOKENS": GOOD_TOKEN,
        "OTTRECON_CALLBACK_URL": "https://recon.example.com/ottpay/callback",
    }


async def test_version_prints_the_installed_distribution_version() -> None:
    code, out, _ = await run_cli("--version", env={})
    assert code == 0
    assert out.strip() == f"ottrecon {version('ottrecon')}"


async def test_check_config_passes_a_complete_configuration_with_reachable_services(
    database_url: str, tmp_path: Path
) -> None:
    # A Redis of its own that fsyncs every write: the shared one may be volatile, which only warns.
    async with redis_server(tmp_path, "--appendonly", "yes", "--appendfsync", "always") as server:
        code, out, err = await run_cli("check-config", env=complete_env(database_url, server.url))
    assert code == 0, err
    assert "migrate, web, worker, api" in out
    assert err == ""


async def test_check_config_names_every_problem_of_every_process_in_one_message() -> None:
    env = {
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "PORT": "eighty",
        "OTTPAY_MERCHANTS": "BAD-ID=0123456789ABCDEF",
        "OTTRECON_API_TOKENS": "short",
        "OTTRECON_SUBMIT_MAX_ATTEMPTS": "many",
        "API_PORT": "70000",
        "OTTRECON_CURRENCY": "dollars",
        "LOG_LEVEL": "LOUD",
    }
    code, out, err = await run_cli("check-config", env=env)
    assert code == 2
    assert out == ""
    assert err.count("ottrecon check-config:") == 1, err
    for expected in (
        "LOG_LEVEL",
        "migrate: DATABASE_URL is not set",
        "web: PORT must be a TCP port number",
        "worker: DATABASE_URL is not set",
        "OTTPAY_MERCHANTS: entry 1",
        "OTTRECON_SUBMIT_MAX_ATTEMPTS must be a number",
        "OTTRECON_API_TOKENS: entry 1",
        "API_PORT must be a TCP port number",
        "OTTRECON_CURRENCY",
    ):
        assert expected in err, f"{expected!r} missing from:\n{err}"
    assert "0123456789ABCDEF" not in err
    assert "Traceback" not in err


async def test_check_config_names_unreachable_servers_without_their_passwords() -> None:
    secret = f"pw{uuid.uuid4().hex}"
    env = complete_env(
        f"postgresql://ottrecon:{secret}@127.0.0.1:{free_port()}/ottrecon",
        f"redis://:{secret}@127.0.0.1:{free_port()}/0",
    )
    code, out, err = await run_cli("check-config", env=env)
    assert code == 1, err
    assert "PostgreSQL at 127.0.0.1:" in err
    assert "Redis at 127.0.0.1:" in err
    assert err.count("ottrecon check-config:") == 1, err
    assert secret not in out + err


async def test_check_config_asks_for_migrate_on_an_unmigrated_database(admin_url: str, redis_url: str) -> None:
    name = f"ottrecon_cc_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        code, _, err = await run_cli("check-config", env=complete_env(with_database(admin_url, name), redis_url))
        assert code == 1
        assert "ottrecon migrate" in err
        # The release step itself only needs a reachable database, not a migrated one.
        code, _, err = await run_cli("check-config", "migrate", env={"DATABASE_URL": with_database(admin_url, name)})
        assert code == 0, err
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def test_check_config_for_the_receiver_needs_no_database(redis_url: str) -> None:
    # The public receiver's host deliberately holds no database credentials (decision 0001).
    code, out, err = await run_cli("check-config", "web", env={"REDIS_URL": redis_url})
    assert code == 0, err
    assert "DATABASE_URL" not in out + err


async def test_check_config_warns_about_variables_no_process_reads(database_url: str, redis_url: str) -> None:
    env = complete_env(database_url, redis_url) | {"OTTRECON_RETRY_WINDOW_SECOND": "60"}
    code, _, err = await run_cli("check-config", env=env)
    assert code == 0, err
    assert "OTTRECON_RETRY_WINDOW_SECOND is set but no ottrecon process reads it" in err
    # Variables some process does read are never reported, whichever process they belong to.
    assert "OTTRECON_API_TOKENS" not in err
    assert "OTTPAY_OPERATORS" not in err


async def test_an_invalid_log_level_is_a_configuration_error_for_every_command(redis_url: str) -> None:
    code, _, err = await run_cli("web", env={"REDIS_URL": redis_url, "LOG_LEVEL": "LOUD"})
    assert code == 2
    assert "LOG_LEVEL" in err
    assert "Traceback" not in err


async def test_check_config_warns_when_redis_can_lose_acknowledged_callbacks(tmp_path: Path, database_url: str) -> None:
    async with redis_server(tmp_path) as server:  # no AOF, no snapshots
        code, _, err = await run_cli("check-config", "web", env=complete_env(database_url, server.url))
    assert code == 0, err  # a warning, as the processes themselves warn and still run
    assert "redis is volatile" in err and "mode none" in err, err


async def test_check_config_is_quiet_about_a_redis_that_fsyncs_every_write(tmp_path: Path, database_url: str) -> None:
    async with redis_server(tmp_path, "--appendonly", "yes", "--appendfsync", "always") as server:
        code, _, err = await run_cli("check-config", "web", env=complete_env(database_url, server.url))
    assert code == 0, err
    assert err == ""


async def test_check_config_refuses_an_operator_id_for_a_merchant_without_a_sign_key(
    database_url: str, redis_url: str
) -> None:
    # The api would take its payments and the worker could never sign them: they would all fail.
    env = complete_env(database_url, redis_url) | {"OTTPAY_OPERATORS": f"{MERCHANT}=1234567890,ON00004652=1234567891"}
    code, _, err = await run_cli("check-config", "worker", env=env)
    assert code == 2, err
    assert "ON00004652" in err and "no sign key" in err
    assert OLD_KEY not in err


async def test_check_config_refuses_payments_without_a_callback_url(database_url: str, redis_url: str) -> None:
    # Every ACTIVEPAY would fail at submission ("OTTRECON_CALLBACK_URL is not configured").
    env = complete_env(database_url, redis_url)
    del env["OTTRECON_CALLBACK_URL"]
    code, _, err = await run_cli("check-config", "worker", env=env)
    assert code == 2, err
    assert "OTTRECON_CALLBACK_URL is not set" in err


async def test_check_config_calls_a_url_without_its_scheme_a_configuration_error_without_echoing_it() -> None:
    env = {"DATABASE_URL": "ottrecon:secret-pw@db.internal/ottrecon", "REDIS_URL": "cache.internal:6379"}
    code, _, err = await run_cli("check-config", "migrate", "web", env=env)
    assert code == 2, err
    assert "DATABASE_URL must be a postgresql:// URL" in err
    assert "REDIS_URL must be a redis://, rediss:// or unix:// URL" in err
    assert "secret-pw" not in err


async def test_check_config_warns_about_two_processes_listening_on_one_port(database_url: str, redis_url: str) -> None:
    env = complete_env(database_url, redis_url) | {"API_PORT": "9102"}  # the worker's metrics port
    code, _, err = await run_cli("check-config", "worker", "api", env=env)
    assert code == 0, err  # a warning: on separate hosts they do not clash
    assert "WORKER_METRICS_PORT and API_PORT are both 9102" in err
