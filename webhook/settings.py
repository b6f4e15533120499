"""Receiver configuration, read once from the environment by the composition root."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ottrecon.config import EnvReader
from ottrecon.errors import ConfigError


@dataclass(frozen=True)
class WebhookSettings:
    """What the public receiver needs: a queue and a port. Deliberately no keys, no database."""

    redis_url: str = field(repr=False)
    port: int = 8080
    host: str = "0.0.0.0"
    # Prometheus /metrics on its own port, never on the public one; 0 turns it off. Loopback unless
    # WEB_METRICS_HOST says otherwise: the receiver's host is public, its metrics are not.
    metrics_port: int = 9101
    metrics_host: str = "127.0.0.1"
    # A real callback is well under 2 KiB; anything near this limit is not a callback.
    max_body_bytes: int = 64 * 1024
    # Redis must confirm within this time or the sender gets a 503 and retries.
    enqueue_timeout_s: float = 2.0
    # How often Redis's persistence settings are read again (for the metrics; warned about if volatile).
    persistence_check_every_s: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> WebhookSettings:
        """Build settings from environment variables, reporting every problem in one ConfigError."""
        problems: list[str] = []
        reader = EnvReader(env, problems)
        redis_url = reader.required("REDIS_URL")
        port = reader.port("PORT", cls.port)
        metrics_port = reader.port("WEB_METRICS_PORT", cls.metrics_port, allow_zero=True)
        if metrics_port == port:
            problems.append("WEB_METRICS_PORT must differ from PORT: the receiver's port is public")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return cls(
            redis_url=redis_url,
            port=port,
            host=reader.text("HOST", cls.host),
            metrics_port=metrics_port,
            metrics_host=reader.text("WEB_METRICS_HOST", cls.metrics_host),
        )
