"""Delivers new alerts to a Slack-compatible webhook: at least once each, retried with backoff, storms summarised."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg

from ottrecon.backoff import backoff
from ottrecon.db import translate_errors
from ottrecon.money import DEFAULT_CURRENCY, format_money
from ottrecon.reconciliation.alerts import ALERT_COLUMNS, AlertView, format_time, printable

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger("ottrecon.alerts")
_rng = random.Random()

# Due, undelivered alerts of any status (one resolved before it was delivered is still reported,
# marked resolved). SKIP LOCKED: concurrent deliverers take disjoint alerts, and each keeps its
# locks until the outcome is recorded, so no alert is sent by two of them.
CLAIM_DUE_ALERTS = f"""
SELECT {ALERT_COLUMNS}, notify_attempts FROM alerts
WHERE notified_at IS NULL AND next_notify_at <= now()
ORDER BY next_notify_at, id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""
# statement_timestamp(), not now(): the send happened after this transaction began.
MARK_DELIVERED = "UPDATE alerts SET notified_at = statement_timestamp(), notify_error = NULL WHERE id = ANY($1::int8[])"
# A failed send is tried again after its delay; there is no last attempt.
MARK_FAILED = """
UPDATE alerts a SET
    notify_attempts = a.notify_attempts + 1,
    next_notify_at = statement_timestamp() + make_interval(secs => f.delay),
    notify_error = f.error
FROM unnest($1::int8[], $2::float8[], $3::text[]) AS f(id, delay, error)
WHERE a.id = f.id
"""
_LARGEST = 5  # alerts listed by name in a storm summary
_MAX_BODY = 100  # bytes of an error answer kept in notify_error


@dataclass(frozen=True)
class DeliveryReport:
    """What one deliver_due_alerts call did; claimed = delivered + failed."""

    claimed: int
    delivered: int
    failed: int
    summarised: bool


async def deliver_due_alerts(
    pool: asyncpg.Pool,
    session: Callable[[], aiohttp.ClientSession],
    webhook_url: str | None,
    *,
    storm_threshold: int = 10,
    batch: int = 200,
    timeout_s: float = 10.0,
    base_delay_s: float = 5.0,
    max_delay_s: float = 600.0,
    display_tz: str = "America/Toronto",
    currency: str = DEFAULT_CURRENCY,
) -> DeliveryReport:
    """Send up to `batch` due alerts: one message each, or one summary when storm_threshold or more are due.

    Safe to run concurrently on every worker. A failed send is retried by a later call after an
    exponential, jittered delay, forever: an endpoint that is down delays alerts but loses none.
    With no webhook_url the alerts are delivered to the log. Raises DatabaseUnavailable when
    Postgres is away; the alerts then simply stay due. The URL is a secret: it is never logged or stored.
    Times in the texts are in display_tz and money in currency, as the finance console shows them.
    session gives the HTTP session, asked for only when a message is sent (the worker then loads aiohttp,
    decision 0046).
    """

    def delay(attempts: int) -> float:
        return backoff(attempts, _rng, base_delay_s=base_delay_s, max_delay_s=max_delay_s)

    # The transaction (and its row locks) spans the HTTP send, which timeout_s keeps short:
    # sends run concurrently, so the locks are held for about one timeout at most.
    async with translate_errors(), pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(CLAIM_DUE_ALERTS, batch)
        if not rows:
            return DeliveryReport(0, 0, 0, False)
        alerts = [AlertView.from_row(row) for row in rows]
        # There is no last attempt: ottrecon.backoff caps its exponent, so days of failures cannot overflow it.
        attempts = {row["id"]: row["notify_attempts"] + 1 for row in rows}
        storm = len(alerts) >= storm_threshold
        errors: dict[int, str | None]
        delays: dict[int, float]
        if webhook_url is None:
            _log_only(alerts, storm, display_tz, currency)
            errors, delays = dict.fromkeys(attempts), {}
        elif storm:
            error = await _post(session(), webhook_url, summary_text(alerts, currency), timeout_s)
            errors = dict.fromkeys(attempts, error)
            # A storm fails as one message, so it comes back as one: a single delay keeps it together.
            delays = dict.fromkeys(attempts, delay(max(attempts.values())))
        else:
            texts = [alert_text(a, display_tz, currency) for a in alerts]
            http = session()
            sent = await asyncio.gather(*(_post(http, webhook_url, text, timeout_s) for text in texts))
            errors = {a.id: error for a, error in zip(alerts, sent, strict=True)}
            delays = {a.id: delay(attempts[a.id]) for a in alerts}
        delivered = [a for a in alerts if errors[a.id] is None]
        failed = [a for a in alerts if errors[a.id] is not None]
        if delivered:
            await conn.execute(MARK_DELIVERED, [a.id for a in delivered])
        if failed:
            await conn.execute(
                MARK_FAILED, [a.id for a in failed], [delays[a.id] for a in failed], [errors[a.id] for a in failed]
            )
    if webhook_url is not None:
        for alert in delivered:
            logger.info("alert delivered", extra=_fields(alert))
    if failed:
        # Said once per call, not per alert: a storm that keeps failing must not flood the log.
        logger.warning(
            "alert delivery failed; will retry",
            extra={
                "alert_ids": [a.id for a in failed],
                "error": errors[failed[0].id],
                "retry_in_s": round(min(delays[a.id] for a in failed), 1),
            },
        )
    return DeliveryReport(len(alerts), len(delivered), len(failed), storm)


def alert_text(alert: AlertView, tz: str = "America/Toronto", currency: str = DEFAULT_CURRENCY) -> str:
    """The message for one alert: kind, merchant, order, money at risk (in currency), first seen (in tz), id."""
    prefix = "ALERT"
    if alert.status == "resolved":
        prefix = f"ALERT (already resolved: {_slack(alert.resolution or 'unknown')})"
    elif alert.status == "acknowledged":
        prefix = "ALERT (already acknowledged)"
    return f"{prefix} {_describe(alert, currency)}, first seen {format_time(alert.first_seen_at, tz)}"


def summary_text(alerts: Sequence[AlertView], currency: str = DEFAULT_CURRENCY) -> str:
    """One message for a storm: counts by kind, total money at risk, the largest few."""
    by_kind = Counter(a.kind for a in alerts)
    total = sum(a.amount_at_risk for a in alerts)  # integer cents: exact
    largest = sorted(alerts, key=lambda a: (-a.amount_at_risk, a.id))[:_LARGEST]
    lines = [
        f"ALERT STORM: {len(alerts)} new alerts, {format_money(total, currency)} at risk in total",
        "by kind: " + ", ".join(f"{_slack(kind)} {n}" for kind, n in sorted(by_kind.items())),
        f"largest {len(largest)}:",
        *(f"• {_describe(a, currency)}" for a in largest),
    ]
    resolved = sum(a.status == "resolved" for a in alerts)
    if resolved:
        lines.append(f"{resolved} of them already resolved")
    lines.append(f"All {len(alerts)} are in `ottrecon alerts list`.")
    return "\n".join(lines)


def _describe(alert: AlertView, currency: str) -> str:
    return (
        f"{_slack(alert.kind)}: merchant {_slack(alert.merchant_id)}, order {_slack(alert.order_id)}, "
        f"{format_money(alert.amount_at_risk, currency)} at risk (alert #{alert.id})"
    )


def _slack(text: str) -> str:
    # Slack reads <…> as links and mentions (<!channel>) and & as an entity; order ids can come
    # from untrusted callbacks, so they are escaped as Slack documents, and kept on one line.
    return printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fields(alert: AlertView) -> dict[str, object]:
    named = {name: getattr(alert, name) for name in ("kind", "merchant_id", "order_id", "amount_at_risk")}
    return {
        "alert_id": alert.id,
        **named,
        "alert_status": alert.status,
        "first_seen_at": alert.first_seen_at.isoformat(),
    }


def _log_only(alerts: Sequence[AlertView], storm: bool, tz: str, currency: str) -> None:
    # Without an endpoint the log is the delivery: every alert gets its own line, even in a storm.
    for alert in alerts:
        logger.warning("alert (no webhook configured): %s", alert_text(alert, tz, currency), extra=_fields(alert))
    if storm:
        logger.warning("alert storm (no webhook configured): %s", summary_text(alerts, currency))


async def _post(session: aiohttp.ClientSession, url: str, text: str, timeout_s: float) -> str | None:
    """POST one message; None when the endpoint took it (2xx), else a short reason free of the URL."""
    import aiohttp  # already loaded: the caller made the session (decision 0046)

    try:
        async with session.post(
            url, json={"text": text}, timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False
        ) as response:
            if 200 <= response.status < 300:
                return None
            # Slack explains a refusal in a short body ("invalid_token"); a longer one is not kept,
            # since a cut-off body could hold a part of an echoed URL that redaction cannot match.
            raw = b""
            while len(raw) <= _MAX_BODY and (chunk := await response.content.read(_MAX_BODY + 1 - len(raw))):
                raw += chunk
            if len(raw) > _MAX_BODY:
                return f"HTTP {response.status}"
            body = raw.decode("utf-8", "replace")
            return _redact(f"HTTP {response.status}: {' '.join(body.split())}".strip(": "), url)
    except TimeoutError:
        return f"timeout after {timeout_s:g}s"
    except (aiohttp.ClientError, OSError) as exc:
        # The class name only: aiohttp's messages can quote the URL, whose path is the secret.
        return f"cannot send: {type(exc).__name__}"


def _redact(text: str, url: str) -> str:
    # An endpoint may echo the request back; the webhook's path and query are its credentials.
    # Slack's secret is the path's last segment, so long segments are redacted on their own too.
    parts = urlsplit(url)
    secrets = [url, parts.path, parts.query, *(s for s in parts.path.split("/") if len(s) >= 8)]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        if len(secret) > 1:
            text = text.replace(secret, "[redacted]")
    return text
