"""Malformed HTTP requests (bad request lines, headers, lengths) are counted and logged at debug level.

aiohttp answers them 400 and logs each one at error level with a traceback ("Error handling
request"). On a public port scanners and broken clients send them all day: that noise would
hide the errors that matter. They are counted in `ottrecon_malformed_requests_total{reason}`
and logged at debug level without a traceback; any other error aiohttp logs is left alone.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

from webhook import metrics

logger = logging.getLogger("ottrecon.webhook")
_AIOHTTP_SERVER_LOGGER = logging.getLogger("aiohttp.server")


class MalformedRequestFilter(logging.Filter):
    """Drops aiohttp's records about requests it could not parse, counting and re-logging them at debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        reason = exc.__class__.__name__
        metrics.MALFORMED.labels(reason=reason).inc()
        # The request line is attacker-controlled: a short excerpt, only at debug level.
        logger.debug("malformed request refused with 400", extra={"reason": reason, "detail": str(exc)[:120]})
        return False


def quiet_malformed_requests() -> None:
    """Install the filter on aiohttp's server logger once per process."""
    if not any(isinstance(f, MalformedRequestFilter) for f in _AIOHTTP_SERVER_LOGGER.filters):
        _AIOHTTP_SERVER_LOGGER.addFilter(MalformedRequestFilter())
