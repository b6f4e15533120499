"""Settings every process reads alike (ottrecon.config.EnvReader): ports, the currency; bad values are config errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest

from ottrecon.api.settings import ApiSettings
from ottrecon.errors import ConfigError
from webhook.settings import WebhookSettings
from worker.settings import WorkerSettings

WEB = {"REDIS_URL": "redis://127.0.0.1:6379/0"}
WORKER = {**WEB, "DATABASE_URL": "postgresql://127.0.0.1/x", "OTTPAY_MERCHANTS": "QC00005496=6698851A525C9433"}
API = {**WORKER, "OTTRECON_API_TOKENS": "pos:" + "t" * 32, "OTTPAY_OPERATORS": "QC00005496=1"}
PORTS: list[tuple[Callable[[Mapping[str, str]], object], Mapping[str, str], str]] = [
    (WebhookSettings.from_env, WEB, "PORT"),
    (WebhookSettings.from_env, WEB, "WEB_METRICS_PORT"),
    (WorkerSettings.from_env, WORKER, "WORKER_METRICS_PORT"),
    (ApiSettings.from_env, API, "API_PORT"),
]


@pytest.mark.parametrize(("from_env", "env", "name"), PORTS, ids=[name for _, _, name in PORTS])
@pytest.mark.parametrize("bad", ["²", "٣", "-1", "65536", "80.0", "http", "1e3"])
def test_port_with_non_ascii_digit_or_out_of_range_is_a_config_error(
    from_env: Callable[[Mapping[str, str]], object], env: Mapping[str, str], name: str, bad: str
) -> None:
    # str.isdigit() accepts '²' and '٣'; int() then raised a bare ValueError: a traceback and exit 1, not exit 2.
    with pytest.raises(ConfigError, match=name):
        from_env({**env, name: bad})


@pytest.mark.parametrize(("from_env", "env", "name"), PORTS, ids=[name for _, _, name in PORTS])
def test_port_in_range_is_taken(
    from_env: Callable[[Mapping[str, str]], object], env: Mapping[str, str], name: str
) -> None:
    settings = from_env({**env, name: " 8443 "})
    assert 8443 in vars(settings).values()


@pytest.mark.parametrize(("from_env", "env", "name"), [p for p in PORTS if "METRICS" in p[2]])
def test_metrics_port_zero_turns_metrics_off(
    from_env: Callable[[Mapping[str, str]], object], env: Mapping[str, str], name: str
) -> None:
    assert vars(from_env({**env, name: "0"}))["metrics_port"] == 0


@pytest.mark.parametrize(("from_env", "env", "name"), [p for p in PORTS if "METRICS" not in p[2]])
def test_serving_port_zero_is_refused(
    from_env: Callable[[Mapping[str, str]], object], env: Mapping[str, str], name: str
) -> None:
    with pytest.raises(ConfigError, match=name):
        from_env({**env, name: "0"})


def test_worker_reads_the_currency_its_alert_texts_show() -> None:
    assert WorkerSettings.from_env(WORKER).currency == "CAD"
    assert WorkerSettings.from_env({**WORKER, "OTTRECON_CURRENCY": "USD"}).currency == "USD"
    with pytest.raises(ConfigError, match="OTTRECON_CURRENCY"):
        WorkerSettings.from_env({**WORKER, "OTTRECON_CURRENCY": "usd"})


def test_worker_reads_the_passivepay_give_up_window() -> None:
    assert WorkerSettings.from_env(WORKER).policy.passivepay_give_up_s == 900
    assert (
        WorkerSettings.from_env({**WORKER, "OTTRECON_PASSIVEPAY_GIVE_UP_SECONDS": "120"}).policy.passivepay_give_up_s
        == 120
    )
    with pytest.raises(ConfigError, match="OTTRECON_PASSIVEPAY_GIVE_UP_SECONDS"):
        WorkerSettings.from_env({**WORKER, "OTTRECON_PASSIVEPAY_GIVE_UP_SECONDS": "0"})


def test_worker_reads_how_many_reconcile_batches_run_at_once() -> None:
    assert WorkerSettings.from_env(WORKER).reconcile_concurrency == 2
    assert WorkerSettings.from_env({**WORKER, "OTTRECON_RECONCILE_CONCURRENCY": "4"}).reconcile_concurrency == 4
    for bad in ("0", "two", "-1"):
        with pytest.raises(ConfigError, match="OTTRECON_RECONCILE_CONCURRENCY"):
            WorkerSettings.from_env({**WORKER, "OTTRECON_RECONCILE_CONCURRENCY": bad})


def test_worker_reads_how_many_writes_it_keeps_in_flight() -> None:
    assert WorkerSettings.from_env(WORKER).writes_in_flight == 2
    assert WorkerSettings.from_env({**WORKER, "OTTRECON_WRITES_IN_FLIGHT": "1"}).writes_in_flight == 1
    with pytest.raises(ConfigError, match="OTTRECON_WRITES_IN_FLIGHT"):
        WorkerSettings.from_env({**WORKER, "OTTRECON_WRITES_IN_FLIGHT": "0"})


@pytest.mark.parametrize("url", ["https://", "http:///processV2", "ftp://gateway.example", "gateway.example"])
def test_worker_refuses_a_gateway_url_without_a_host_at_start(url: str) -> None:
    # The OTT Pay client is made with the first payment (decision 0046): settings refuse what it would refuse.
    with pytest.raises(ConfigError, match="OTTPAY_BASE_URL"):
        WorkerSettings.from_env({**WORKER, "OTTPAY_BASE_URL": url})
