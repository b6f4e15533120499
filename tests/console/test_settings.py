"""Console configuration: optional, every problem reported at once, hashes never shown; `ottrecon hash-password`."""

from __future__ import annotations

import io

import pytest

from ottrecon.api.settings import ApiSettings
from ottrecon.cli import main
from ottrecon.console.passwords import PasswordHash, hash_password
from ottrecon.console.settings import ConsoleSettings, parse_users
from ottrecon.errors import ConfigError

BASE = {
    "DATABASE_URL": "postgresql://u:p@db/ottrecon",
    "REDIS_URL": "redis://r:6379/0",
    "OTTRECON_API_TOKENS": "pos:" + "t" * 32,
    "OTTPAY_OPERATORS": "QC00005496=1234567890",
}
HASH = hash_password("a-long-enough-password")


def test_api_settings_start_without_console_users() -> None:
    settings = ApiSettings.from_env(BASE)

    assert not settings.console.configured
    assert settings.console == ConsoleSettings()
    assert (settings.console.display_tz, settings.console.currency) == ("America/Toronto", "CAD")
    assert not settings.console.insecure_cookies


def test_console_settings_are_read_from_the_environment() -> None:
    env = BASE | {
        "OTTRECON_CONSOLE_USERS": f"ann:finance:{HASH}, bob:viewer:{HASH}",
        "OTTRECON_DISPLAY_TZ": "America/Vancouver",
        "OTTRECON_BUSINESS_TZ": "America/Montreal",
        "OTTRECON_CONSOLE_INSECURE_COOKIES": "1",
        "OTTRECON_CURRENCY": "USD",
    }

    console = ApiSettings.from_env(env).console

    assert {name: user.role for name, user in console.users.items()} == {"ann": "finance", "bob": "viewer"}
    assert console.users["ann"].can_write and not console.users["bob"].can_write
    assert (console.display_tz, console.business_tz, console.currency) == (
        "America/Vancouver",
        "America/Montreal",
        "USD",
    )
    assert console.insecure_cookies


def test_console_settings_report_every_problem_without_showing_a_hash() -> None:
    env = BASE | {
        "OTTRECON_CONSOLE_USERS": f"ann:admin:{HASH},bad name:viewer:{HASH},cy:viewer:scrypt$1$2$3,ann:finance:{HASH}",
        "OTTRECON_DISPLAY_TZ": "Mars/Olympus",
        "OTTRECON_CONSOLE_INSECURE_COOKIES": "maybe",
        "OTTRECON_CURRENCY": "dollars",
    }

    with pytest.raises(ConfigError) as caught:
        ApiSettings.from_env(env)
    message = str(caught.value)

    for words in (
        "entry 1 (ann): role must be finance or viewer",
        "entry 2: user name must be",
        "entry 3 (cy): not a hash",
        "OTTRECON_DISPLAY_TZ: unknown time zone",
        "OTTRECON_CONSOLE_INSECURE_COOKIES must be 1 or 0",
        "OTTRECON_CURRENCY must be a three-letter",
    ):
        assert words in message
    assert HASH not in message and HASH.split("$")[4] not in message


def test_users_listed_twice_are_refused_and_reprs_hide_hashes() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        parse_users(f"ann:finance:{HASH},ann:viewer:{HASH}")

    users = parse_users(f"ann:finance:{HASH}")

    assert HASH.split("$")[5] not in repr(users) + repr(ConsoleSettings(users=users))


def test_password_hash_verifies_only_its_password() -> None:
    parsed = PasswordHash.parse(HASH)

    assert parsed.matches("a-long-enough-password")
    assert not parsed.matches("a-long-enough-passwore")
    assert HASH.startswith("scrypt$131072$8$1$")
    assert hash_password("a-long-enough-password") != HASH  # a fresh salt each time


def test_password_hash_refuses_parameters_that_would_exhaust_the_server() -> None:
    salt_and_hash = "$".join(HASH.split("$")[4:])
    for params in ("1048576$32$1", "16384$8$99", "1000$8$1", "0$8$1"):
        with pytest.raises(ValueError):
            PasswordHash.parse(f"scrypt${params}${salt_and_hash}")
    with pytest.raises(ValueError, match="base64"):
        PasswordHash.parse("scrypt$16384$8$1$!!!$???")


def test_hash_password_command_reads_the_password_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery staple\n"))

    assert main(["hash-password"], env={}) == 0
    printed = capsys.readouterr().out.strip()

    assert PasswordHash.parse(printed).matches("correct horse battery staple")
    assert "correct horse" not in printed


def test_hash_password_command_refuses_short_passwords_and_argv(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))

    assert main(["hash-password"], env={}) == 2
    assert "at least 12 characters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["hash-password", "a-password-on-the-command-line"], env={})
