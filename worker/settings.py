"""Worker configuration, read once from the environment by the composition root."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ottpay.keys import MerchantKeys, parse_merchant_keys, parse_operator_ids
from ottpay.messages import GATEWAY_BASE_URL
from ottrecon.config import EnvReader
from ottrecon.errors import ConfigError
from ottrecon.money import DEFAULT_CURRENCY
from ottrecon.payments.submission import Policy
from ottrecon.reconciliation.reconcile import DEFAULT_CONCURRENCY


@dataclass(frozen=True)
class WorkerSettings:
    """Everything the callback worker needs; URLs may hold passwords, so they are hidden from repr."""

    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    merchants: MerchantKeys
    # How long a callback is retried while Postgres is unreachable before it is dead-lettered.
    retry_window_s: float = 900.0
    retry_base_delay_s: float = 1.0
    retry_max_delay_s: float = 60.0
    # arq polls Redis every poll_delay_s and runs up to max_jobs jobs at once (see docs/decisions).
    max_jobs: int = 256
    poll_delay_s: float = 0.05
    # Largest number of callbacks written in one Postgres statement (group commit).
    write_batch_max: int = 500
    # Group-commit statements in flight at once, each on its own connection (decision 0041).
    writes_in_flight: int = 2
    db_pool_max: int = 8
    # Taking payments: operator id per merchant (merchants without one cannot submit), the gateway,
    # and the public URL of the receiver's callback endpoint (sent as ACTIVEPAY's call_back_url).
    operators: Mapping[str, str] = field(default_factory=dict)
    gateway_base_url: str = GATEWAY_BASE_URL
    gateway_timeout_s: float = 15.0
    callback_url: str | None = None
    policy: Policy = field(default_factory=Policy)
    # Scheduled jobs run every cron_every_s seconds and take at most sweep_batch orders each.
    cron_every_s: int = 5
    sweep_batch: int = 50
    # Daily reports and statement periods are in this zone (OTT Pay's merchants are Canadian).
    business_tz: str = "America/Toronto"
    # Times in alert texts, as the finance console shows them (the api's OTTRECON_DISPLAY_TZ).
    display_tz: str = "America/Toronto"
    # Money in alert texts, as the finance console shows it (OTTRECON_CURRENCY).
    currency: str = DEFAULT_CURRENCY
    # Slack-compatible incoming webhook for alerts; its path is a secret. None: alerts go to the log.
    alert_webhook_url: str | None = field(default=None, repr=False)
    alert_storm_threshold: int = 10
    # Reconcile batches run at once, each on its own connection (decision 0040): Postgres does the work.
    reconcile_concurrency: int = DEFAULT_CONCURRENCY
    # Prometheus /metrics port; 0 turns it off. Workers sharing a host each need their own. Loopback
    # unless WORKER_METRICS_HOST says otherwise: the gauges show money at risk.
    metrics_port: int = 9102
    metrics_host: str = "127.0.0.1"
    # Rejected callbacks last delivered longer ago than this are deleted (worker/retention.py).
    rejected_retention_s: float = 30 * 86400.0
    # A running job holds a lease (arq's in-progress key) renewed every lease/3 seconds; a worker
    # killed mid-job stops renewing, and another worker takes the job once the lease expires.
    job_lease_s: float = 15.0
    # An ingest job gives up waiting for its write after this long and retries (below arq's timeout).
    ingest_write_timeout_s: float = 60.0
    # On SIGTERM the worker stops taking jobs and lets running ones finish for up to this long.
    shutdown_grace_s: float = 25.0
    # How often Redis's persistence settings are read again (a volatile Redis is warned about).
    persistence_check_every_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WorkerSettings:
        """Build settings from environment variables, reporting every problem in one ConfigError."""
        problems: list[str] = []
        reader = EnvReader(env, problems)
        database_url = reader.required("DATABASE_URL")
        redis_url = reader.required("REDIS_URL")
        merchants_text = reader.required("OTTPAY_MERCHANTS")
        merchants = MerchantKeys()
        if merchants_text:
            try:
                merchants = parse_merchant_keys(merchants_text)
            except ValueError as exc:
                problems.append(f"OTTPAY_MERCHANTS: {exc}")
        operators: dict[str, str] = {}
        try:
            operators = parse_operator_ids(env.get("OTTPAY_OPERATORS", ""))
        except ValueError as exc:
            problems.append(f"OTTPAY_OPERATORS: {exc}")
        callback_url = env.get("OTTRECON_CALLBACK_URL", "").strip() or None
        if callback_url and not callback_url.startswith(("http://", "https://")):
            problems.append("OTTRECON_CALLBACK_URL must be an http(s) URL")
        base_url = env.get("OTTPAY_BASE_URL", "").strip() or cls.gateway_base_url
        if not _is_http_url(base_url):
            # The OTT Pay client checks the same when the first payment makes it (decision 0046): refused at start.
            problems.append("OTTPAY_BASE_URL must be an absolute http(s) URL with a host")
        default = Policy()
        policy = Policy(
            passivepay_code_ttl_s=reader.number(
                "OTTRECON_PASSIVEPAY_CODE_TTL_SECONDS", default.passivepay_code_ttl_s, minimum=1
            ),
            max_attempts=int(reader.number("OTTRECON_SUBMIT_MAX_ATTEMPTS", default.max_attempts, minimum=1)),
            base_delay_s=reader.number("OTTRECON_SUBMIT_BASE_DELAY_SECONDS", default.base_delay_s, minimum=0.01),
            max_delay_s=reader.number("OTTRECON_SUBMIT_MAX_DELAY_SECONDS", default.max_delay_s, minimum=0.01),
            sweep_after_s=reader.number("OTTRECON_SWEEP_AFTER_SECONDS", default.sweep_after_s, minimum=0),
            unpaid_deadline_s=reader.number("OTTRECON_UNPAID_DEADLINE_SECONDS", default.unpaid_deadline_s, minimum=0),
            sweep_max_age_s=reader.number("OTTRECON_SWEEP_MAX_AGE_SECONDS", default.sweep_max_age_s, minimum=0),
            passivepay_give_up_s=reader.number(
                "OTTRECON_PASSIVEPAY_GIVE_UP_SECONDS", default.passivepay_give_up_s, minimum=1
            ),
        )
        business_tz = env.get("OTTRECON_BUSINESS_TZ", "").strip() or cls.business_tz
        display_tz = env.get("OTTRECON_DISPLAY_TZ", "").strip() or cls.display_tz
        for name, zone in (("OTTRECON_BUSINESS_TZ", business_tz), ("OTTRECON_DISPLAY_TZ", display_tz)):
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                problems.append(f"{name}: unknown time zone {zone!r}")
        alert_url = env.get("OTTRECON_ALERT_WEBHOOK_URL", "").strip() or None
        if alert_url and not alert_url.startswith(("http://", "https://")):
            problems.append("OTTRECON_ALERT_WEBHOOK_URL must be an http(s) URL")
        settings = cls(
            business_tz=business_tz,
            display_tz=display_tz,
            currency=reader.currency(),
            alert_webhook_url=alert_url,
            alert_storm_threshold=int(
                reader.number("OTTRECON_ALERT_STORM_THRESHOLD", cls.alert_storm_threshold, minimum=2)
            ),
            operators=operators,
            gateway_base_url=base_url,
            gateway_timeout_s=reader.number("OTTPAY_TIMEOUT_SECONDS", cls.gateway_timeout_s, minimum=0.1),
            callback_url=callback_url,
            policy=policy,
            cron_every_s=int(reader.number("OTTRECON_CRON_EVERY_SECONDS", cls.cron_every_s, minimum=1)),
            database_url=database_url,
            redis_url=redis_url,
            merchants=merchants,
            retry_window_s=reader.number("OTTRECON_RETRY_WINDOW_SECONDS", cls.retry_window_s, minimum=1),
            max_jobs=int(reader.number("OTTRECON_WORKER_MAX_JOBS", cls.max_jobs, minimum=1)),
            poll_delay_s=reader.number("OTTRECON_WORKER_POLL_DELAY_SECONDS", cls.poll_delay_s, minimum=0.001),
            write_batch_max=int(reader.number("OTTRECON_WRITE_BATCH_MAX", cls.write_batch_max, minimum=1)),
            writes_in_flight=int(reader.number("OTTRECON_WRITES_IN_FLIGHT", cls.writes_in_flight, minimum=1)),
            db_pool_max=int(reader.number("OTTRECON_DB_POOL_MAX", cls.db_pool_max, minimum=1)),
            reconcile_concurrency=int(
                reader.number("OTTRECON_RECONCILE_CONCURRENCY", cls.reconcile_concurrency, minimum=1)
            ),
            metrics_port=reader.port("WORKER_METRICS_PORT", cls.metrics_port, allow_zero=True),
            metrics_host=env.get("WORKER_METRICS_HOST", "").strip() or cls.metrics_host,
            rejected_retention_s=86400 * reader.number("OTTRECON_REJECTED_RETENTION_DAYS", 30, minimum=1),
            job_lease_s=reader.number("OTTRECON_JOB_LEASE_SECONDS", cls.job_lease_s, minimum=1),
            shutdown_grace_s=reader.number("OTTRECON_WORKER_SHUTDOWN_GRACE_SECONDS", cls.shutdown_grace_s, minimum=0),
        )
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return settings

    @property
    def max_tries(self) -> int:
        """How many times a job is attempted so that its retries span at least retry_window_s."""
        tries, waited = 1, 0.0
        while waited < self.retry_window_s:
            waited += self.retry_delay(tries)
            tries += 1
        return tries

    def retry_delay(self, job_try: int) -> float:
        """Seconds to wait after failed try number job_try: exponential, capped."""
        return float(min(self.retry_max_delay_s, self.retry_base_delay_s * 2 ** (job_try - 1)))


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)
