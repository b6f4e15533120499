"""The release as an operator gets it: sdist and wheel built from this checkout, the wheel installed from the
lock into a new virtualenv outside the checkout, migrated, and one callback recorded end to end by
`ottrecon web` and `ottrecon worker` running from that install.

Built once per session (uv from the dev group; its cache makes the install take seconds).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tarfile
import tomllib
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from subprocess import PIPE

import aiohttp
import asyncpg
import pytest

from tests.conftest import MERCHANT, OLD_KEY, with_database
from tests.simulator import free_port

REPO = Path(__file__).resolve().parents[2]
UV = str(Path(sys.executable).with_name("uv"))
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PROJECT["project"]["version"]
# Every package of the production distribution, with its directory in the checkout.
PRODUCTION_PACKAGES = {
    "ottrecon": "ottrecon",
    "ottpay": "ottpay",
    "webhook": "webhook",
    "worker": "worker",
}


@dataclass(frozen=True)
class Release:
    """The built artefacts and the virtualenv the wheel was installed into."""

    sdist: Path
    wheel: Path
    venv: Path
    home: Path  # a working directory outside the checkout

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def run(*command: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """What a service account has: no PYTHONPATH, no virtualenv of ours, nothing pointing at the checkout."""
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LOG_LEVEL": "WARNING", **extra}


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    root = tmp_path_factory.mktemp("release")
    dist = root / "dist"
    # Without --sdist/--wheel uv builds the sdist, then the wheel FROM the sdist: a file missing from the
    # sdist fails here instead of at an operator's.
    run(UV, "build", "--quiet", "--out-dir", str(dist), "--python", sys.executable)
    (sdist,) = dist.glob("ottrecon-*.tar.gz")
    (wheel,) = dist.glob("ottrecon-*.whl")
    requirements = root / "requirements.txt"
    run(
        UV, "export", "--frozen", "--quiet", "--no-dev", "--no-emit-project", "--no-emit-workspace",
        "--format", "requirements-txt", "--output-file", str(requirements),
    )  # fmt: skip
    venv = root / "venv"
    home = root / "home"
    home.mkdir()
    python = os.path.realpath(sys.executable)
    run(UV, "venv", "--quiet", "--python", python, str(venv), cwd=home)
    # Exactly the locked versions, each checked against its hash; then the wheel itself, adding nothing.
    run(UV, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--require-hashes",
        "-r", str(requirements), cwd=home)  # fmt: skip
    run(UV, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "--no-deps", str(wheel), cwd=home)
    return Release(sdist=sdist, wheel=wheel, venv=venv, home=home)


def test_wheel_holds_every_module_and_migration_and_nothing_for_development(release: Release) -> None:
    names = set(zipfile.ZipFile(release.wheel).namelist())
    for package, directory in PRODUCTION_PACKAGES.items():
        for source in (REPO / directory).rglob("*.py"):
            if "__pycache__" not in source.parts:
                inside = f"{package}/{source.relative_to(REPO / directory).as_posix()}"
                assert inside in names, f"{inside} is missing from the wheel"
    migrations = sorted(path.name for path in (REPO / "sql").glob("*.sql"))
    assert migrations
    assert sorted(n.removeprefix("ottrecon/sql/") for n in names if re.fullmatch(r"ottrecon/sql/.+\.sql", n)) == (
        migrations
    )
    for data in (
        "ottrecon/reconciliation/queries/reconcile_ledger.sql",
        "ottrecon/console/templates/base.html",
        "ottrecon/py.typed",
    ):
        assert data in names
    top_level = {name.split("/")[0] for name in names}
    assert top_level == set(PRODUCTION_PACKAGES) | {f"ottrecon-{VERSION}.dist-info"}


def test_wheel_requires_exact_arq_and_no_development_packages(release: Release) -> None:
    with zipfile.ZipFile(release.wheel) as wheel:
        metadata = Parser().parsestr(wheel.read(f"ottrecon-{VERSION}.dist-info/METADATA").decode())
    runtime = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert "arq==0.28.0" in runtime
    for development in ("honcho", "ottrecon-simulator", "uv", "pytest"):
        assert not any(r.startswith(development) for r in runtime), runtime


def test_sdist_carries_the_migrations_and_the_changelog(release: Release) -> None:
    with tarfile.open(release.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {f"sql/{path.name}" for path in (REPO / "sql").glob("*.sql")} <= names
    assert {"CHANGELOG.md", "pyproject.toml", "deploy/systemd/ottrecon-web.service"} <= names


def test_installed_release_imports_nothing_from_the_checkout(release: Release) -> None:
    out = run(
        release.bin("python"),
        "-c",
        "import ottpay, ottrecon, ottrecon.api, ottrecon.console, webhook, worker; "
        "print('\\n'.join(m.__file__ for m in (ottpay, ottrecon, ottrecon.api, ottrecon.console, webhook, worker)))",
        cwd=release.home,
        env=clean_env(),
    )
    assert all(Path(path).is_relative_to(release.venv) for path in out.split()), out
    assert run(release.bin("ottrecon"), "--version", cwd=release.home, env=clean_env()).strip() == (
        f"ottrecon {VERSION}"
    )


def test_installed_release_explains_how_to_get_the_simulator(release: Release) -> None:
    result = subprocess.run(
        [release.bin("ottrecon"), "sim"],
        cwd=release.home,
        env=clean_env(OTTPAY_MERCHANTS=f"{MERCHANT}={OLD_KEY}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not part of this installation" in result.stderr
    assert "pip install ./simulator" in result.stderr


@pytest.fixture
async def fresh_database(admin_url: str) -> AsyncIterator[str]:
    """An empty database: `ottrecon migrate` from the install must build the whole schema."""
    name = f"ottrecon_rel_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_url, name)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Processes started by a test, stopped with SIGTERM (killed if they linger) when it ends."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def arun(release: Release, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """`ottrecon ARGS` from the installed release, run from outside the checkout."""
    process = await asyncio.create_subprocess_exec(
        release.bin("ottrecon"), *args, cwd=release.home, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_installed_release_migrates_and_records_a_callback_end_to_end(
    release: Release, fresh_database: str, redis_url: str, processes: list[asyncio.subprocess.Process]
) -> None:
    env = clean_env(
        DATABASE_URL=fresh_database,
        REDIS_URL=redis_url,
        OTTPAY_MERCHANTS=f"{MERCHANT}={OLD_KEY}",
        PORT=str(free_port()),
        WEB_METRICS_PORT="0",
        WORKER_METRICS_PORT="0",
        OTTRECON_API_TOKENS="release:" + "r" * 32,
        OTTPAY_OPERATORS=f"{MERCHANT}=1234567890",
        OTTRECON_CALLBACK_URL="https://recon.example.com/ottpay/callback",
    )
    code, _, err = await arun(release, "migrate", env=env)
    assert code == 0, err
    assert "0001_callbacks_and_payments" in err
    code, _, err = await arun(release, "check-config", env=env)
    assert code == 0, err

    for command in ("web", "worker"):
        processes.append(
            await asyncio.create_subprocess_exec(release.bin("ottrecon"), command, cwd=release.home, env=env)
        )
    code, callback, err = await arun(
        release, "make-callback", "--merchant", MERCHANT, "--order-id", "REL-1", "--amount", "1250", env=env
    )
    assert code == 0, err
    url = f"http://127.0.0.1:{env['PORT']}/ottpay/callback"
    async with aiohttp.ClientSession() as session:
        for _ in range(150):  # the receiver is starting
            try:
                async with session.post(url, data=callback, headers={"Content-Type": "application/json"}) as response:
                    assert response.status == 200, await response.text()
                    break
            except aiohttp.ClientConnectionError:
                assert all(p.returncode is None for p in processes), "a process exited at start"
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the installed receiver never answered")

    conn = await asyncpg.connect(fresh_database)
    try:
        for _ in range(150):  # the worker verifies and records it
            row = await conn.fetchrow("SELECT order_id, amount FROM payments")
            if row is not None:
                break
            await asyncio.sleep(0.1)
        assert row is not None, "the installed worker did not record the payment"
        assert (row["order_id"], row["amount"]) == ("REL-1", 1250)
    finally:
        await conn.close()

    web = processes[0]
    web.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(web.wait(), 15) == 0
