"""`make test` on a machine that lacks something: it installs it (root with apt) or stops at once naming it.

The machine is simulated by a PATH holding every command of the real one except those the test takes
away, plus stand-ins for `id` (root or not) and `apt-get` (records its arguments, "installs" by
creating the missing commands). Nothing is installed on the real machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from tests.simulator import free_port

REPO = Path(__file__).resolve().parents[2]
# The real interpreter, not this virtualenv's: prerequisites.sh checks the Python a fresh clone would use.
PYTHON = os.path.realpath(sys.executable)
TAKEN_AWAY = {"chromium", "redis-server", "apt-get", "id"}


def machine_path(bin_dir: Path, *, uid: int, apt_provides: bool | None) -> str:
    """A PATH like this machine's without chromium and redis-server; apt_provides None: no apt-get at all."""
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = bin_dir / entry.name
            if entry.name not in TAKEN_AWAY and not target.exists() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    real_id = shutil.which("id")
    write_script(bin_dir / "id", f'[ "$1" = -u ] && {{ echo {uid}; exit 0; }}\nexec {real_id} "$@"')
    if apt_provides is not None:
        creates = "".join(
            f'printf "#!/bin/sh\\n" > "{bin_dir}/{name}"; chmod +x "{bin_dir}/{name}"\n'
            for name in ("chromium", "redis-server")
        )
        write_script(
            bin_dir / "apt-get",
            f'echo "$@" >> "{bin_dir}/apt.log"\n'
            + (f'case " $* " in *" install "*) {creates};; esac\n' if apt_provides else ""),
        )
    return str(bin_dir)


def write_script(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def machine_env(path: str) -> dict[str, str]:
    # No REDIS_URL and nothing answering on the probed port: Redis counts as missing.
    return {
        "PATH": path,
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHON": PYTHON,
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/unused",
        "OTTRECON_REDIS_PROBE_PORT": str(free_port()),
    }


def test_make_test_stops_before_running_anything_and_names_what_to_install(tmp_path: Path) -> None:
    path = machine_path(tmp_path / "bin", uid=1000, apt_provides=None)
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "test"],
        env=machine_env(path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "chromium: Chromium for the browser tests" in result.stderr, result.stderr
    assert "redis-server: a Redis server" in result.stderr
    assert "apt-get install redis-server chromium" in result.stderr
    # Stopped at once: no install, no lint, no test ran.
    for later_step in ("uv sync", "ruff", "mypy", "pytest", "local_services"):
        assert later_step not in result.stdout + result.stderr


def prerequisites(env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "prerequisites.sh"), "test"], env=env, capture_output=True, text=True, timeout=30
    )


def test_as_root_with_apt_the_missing_packages_are_installed_then_checked_again(tmp_path: Path) -> None:
    result = prerequisites(machine_env(machine_path(tmp_path / "bin", uid=0, apt_provides=True)))
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "bin" / "apt.log").read_text().splitlines()
    assert calls[0].endswith("update -qq")
    assert calls[1].endswith("install -y -qq redis-server chromium")
    assert len(calls) == 2


def test_an_install_that_does_not_provide_the_command_fails_after_one_try(tmp_path: Path) -> None:
    result = prerequisites(machine_env(machine_path(tmp_path / "bin", uid=0, apt_provides=False)))
    assert result.returncode == 1
    assert "chromium: Chromium for the browser tests" in result.stderr
    assert len((tmp_path / "bin" / "apt.log").read_text().splitlines()) == 2


def test_this_machine_has_everything_make_test_needs() -> None:
    # The suite is running, so the check must agree (and must not try to install anything).
    result = prerequisites(env=None)
    assert (result.returncode, result.stderr) == (0, "")


def test_makefile_bootstraps_the_same_uv_the_dev_group_pins() -> None:
    # Two uv versions would write two lock formats: the Makefile's and the lock's must agree.
    (makefile_version,) = re.findall(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    dev_group = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    assert f"uv=={makefile_version}" in dev_group
    assert version("uv") == makefile_version
