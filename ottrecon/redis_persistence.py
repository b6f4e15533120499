"""How much a Redis restart can lose: read Redis's persistence settings, report them, warn when volatile.

The receiver answers 200 once Redis has a callback, and OTT Pay does not resend an acknowledged
callback, so whatever Redis loses is lost for good. What a restart can lose depends only on
Redis's own settings (docs/RELIABILITY.md has the measured figures):

| mode           | settings                          | acknowledged callbacks a crash can lose          |
|----------------|-----------------------------------|--------------------------------------------------|
| `aof-always`   | appendonly yes, appendfsync always | none                                             |
| `aof-everysec` | appendonly yes, appendfsync everysec | none on a Redis crash; ~1 s on a machine crash |
| `aof-os`       | appendonly yes, appendfsync no    | none on a Redis crash; ~30 s on a machine crash  |
| `snapshots`    | appendonly no, save "…"           | everything since the last snapshot (minutes)     |
| `none`         | appendonly no, save ""            | everything still queued                          |

Neutral on purpose (Redis only, no database, no import of webhook or worker): the receiver,
the worker and `ottrecon check-config` all use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

logger = logging.getLogger("ottrecon.redis")

MODES = ("aof-always", "aof-everysec", "aof-os", "aof-unknown", "snapshots", "none", "unknown")
_LOSS_WINDOW = {
    "aof-always": "none: every write is fsynced before Redis confirms it",
    "aof-everysec": "none on a Redis crash; up to about 1 s of callbacks on a machine crash or power loss",
    "aof-os": "none on a Redis crash; up to about 30 s of callbacks on a machine crash or power loss",
    "aof-unknown": "depends on appendfsync, which this Redis does not let us read (CONFIG is disabled)",
    "snapshots": "every callback acknowledged since the last snapshot (minutes) on any restart",
    "none": "every callback still queued, on any restart",
    "unknown": "unknown: Redis did not say how it persists data",
}
# A volatile Redis loses acknowledged callbacks on an ordinary restart: warned about at error level.
VOLATILE_MODES = frozenset({"snapshots", "none"})
# While Redis stays volatile the warning is repeated this often, so it never scrolls out of sight.
REPEAT_WARNING_S = 3600.0

_mode_gauge = Gauge(
    "ottrecon_redis_persistence",
    "1 for the persistence mode Redis reported (aof-always is the only one losing nothing on a machine crash).",
    ["mode"],
)
DURABLE = Gauge(
    "ottrecon_redis_durable",
    "1 when Redis fsyncs every write before confirming it (appendonly yes, appendfsync always), else 0.",
)
for _mode in MODES:
    _mode_gauge.labels(mode=_mode)


@dataclass(frozen=True)
class Persistence:
    """Redis's persistence settings as read, and what they mean for acknowledged callbacks."""

    appendonly: str | None
    appendfsync: str | None
    save: str | None

    @property
    def mode(self) -> str:
        if self.appendonly == "yes":
            return {"always": "aof-always", "everysec": "aof-everysec", "no": "aof-os"}.get(
                self.appendfsync or "", "aof-unknown"
            )
        if self.appendonly == "no":
            return "snapshots" if (self.save or "").strip() else "none"
        return "unknown"

    @property
    def durable(self) -> bool:
        return self.mode == "aof-always"

    @property
    def volatile(self) -> bool:
        return self.mode in VOLATILE_MODES

    @property
    def loss_window(self) -> str:
        return _LOSS_WINDOW[self.mode]

    def report(self) -> dict[str, Any]:
        """For check-config and the log: the raw settings and what they mean."""
        return {
            **asdict(self),
            "mode": self.mode,
            "durable": self.durable,
            "volatile": self.volatile,
            "loss_window": self.loss_window,
        }


async def probe(redis: Redis) -> Persistence:
    """Read appendonly, appendfsync and save. Falls back to INFO where CONFIG is disabled (managed Redis).

    Raises what redis-py raises when Redis does not answer.
    """
    try:
        config: dict[Any, Any] = await redis.config_get("appendonly")
        config |= await redis.config_get("appendfsync")
        config |= await redis.config_get("save")
    except ResponseError:
        info: dict[str, Any] = await redis.info(section="persistence")
        aof = info.get("aof_enabled")
        return Persistence(
            appendonly=None if aof is None else ("yes" if int(aof) else "no"), appendfsync=None, save=None
        )
    values = {_text(k): _text(v) for k, v in config.items()}
    return Persistence(values.get("appendonly"), values.get("appendfsync"), values.get("save"))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PersistenceWatch:
    """Reads Redis's persistence now and then, keeps the latest, sets the metrics, warns on a volatile Redis."""

    def __init__(self, redis: Redis, every_s: float, *, process: str) -> None:
        self._redis = redis
        self._every_s = every_s
        self._process = process
        self.latest: Persistence | None = None
        self._warned_at = 0.0
        self._stop = asyncio.Event()
        # A check may be asked for while the periodic one runs: one at a time, so a change is logged once.
        self._checking = asyncio.Lock()

    async def run(self) -> None:
        """Check at once, then every every_s seconds, until stop(). A Redis that is away is skipped."""
        while not self._stop.is_set():
            await self.check_once()
            # An event rather than cancellation alone: redis-py can swallow a CancelledError mid-command.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._every_s)

    def stop(self) -> None:
        self._stop.set()

    async def check_once(self) -> Persistence | None:
        """Read the settings now; on a change set the metrics and log. Returns the latest reading (None: never read)."""
        async with self._checking:
            return await self._check()

    async def _check(self) -> Persistence | None:
        try:
            current = await probe(self._redis)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.debug("could not read redis persistence", extra={"error": exc.__class__.__name__})
            return self.latest
        changed = current != self.latest
        self.latest = current
        if changed:
            for mode in MODES:
                _mode_gauge.labels(mode=mode).set(1 if mode == current.mode else 0)
            DURABLE.set(1 if current.durable else 0)
        now = time.monotonic()
        if changed or (current.volatile and now - self._warned_at >= REPEAT_WARNING_S):
            self._warned_at = now
            _log(current, self._process)
        return current


def _log(persistence: Persistence, process: str) -> None:
    extra = {"component": process, **persistence.report()}
    if persistence.volatile or persistence.mode == "unknown":
        logger.error(
            "REDIS IS VOLATILE: acknowledged callbacks can be lost on a Redis restart and OTT Pay will not "
            "resend them; set appendonly yes and appendfsync always (docs/RELIABILITY.md)",
            extra=extra,
        )
    elif not persistence.durable:
        logger.warning(
            "redis does not fsync every write: a machine crash can lose acknowledged callbacks; "
            "appendfsync always is recommended (docs/RELIABILITY.md)",
            extra=extra,
        )
    else:
        logger.info("redis persistence is durable (appendonly yes, appendfsync always)", extra=extra)


async def stop_watch(watch: PersistenceWatch, task: asyncio.Task[None]) -> None:
    """Stop a watch's task, waiting briefly: it ends at its next step even if a cancellation was lost."""
    watch.stop()
    task.cancel()
    await asyncio.wait({task}, timeout=2)
