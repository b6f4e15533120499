"""One JSON object per log line, carrying the ids a log record was given via ``extra``."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats records as JSON lines: time, level, logger, message, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def level_problem(level: str) -> str | None:
    """Why LOG_LEVEL's value is not usable, or None when it is."""
    if level.strip().upper() in LEVELS:
        return None
    return f"LOG_LEVEL must be one of {', '.join(LEVELS)}, got {level!r}"


def configure(level: str = "INFO") -> None:
    """Send JSON lines to stderr. arq's own per-job lines are kept to warnings: ours carry the ids.

    level must pass level_problem (the CLI checks it first and refuses to start otherwise)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.strip().upper())
    for noisy in ("arq.worker", "arq.jobs", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
