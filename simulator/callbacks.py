"""Payment callbacks from the simulator to the merchant (PROTOCOL §4), with retries and injected faults."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from yarl import URL

from ottpay.envelope import build_callback
from simulator.background import Background
from simulator.faults import Dice
from simulator.settings import SimulatorSettings
from simulator.signkeys import HeldKeys
from simulator.state import CallbackStats, Order

logger = logging.getLogger("simulator")

# One delivery attempt may take this long before it counts as failed and is retried.
ATTEMPT_TIMEOUT_S = 10.0
_ATTEMPT_TIMEOUT = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)


def callback_url_allowed(url: str) -> bool:
    """Callbacks only go to absolute http(s) URLs."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


class CallbackSender:
    """Sends one paid order's callback in the background: at least once unless dropped, in any order.

    Faults are decided when the order is paid, in payment order, so a seed replays them exactly.
    """

    def __init__(self, settings: SimulatorSettings, keys: HeldKeys, dice: Dice, background: Background) -> None:
        self._settings = settings
        self._keys = keys
        self._dice = dice
        self._background = background
        self._session: aiohttp.ClientSession | None = None

    def attach(self, session: aiohttp.ClientSession | None) -> None:
        """Give the sender the HTTP session it posts with (owned by the app), or take it away."""
        self._session = session

    def order_paid(self, order: Order, stats: CallbackStats) -> None:
        """Schedule the callback for an ACTIVEPAY order that was just paid."""
        if order.call_back_url is None:
            return
        faults = self._settings.faults
        stats.scheduled += 1
        # Every draw happens here, synchronously and in a fixed order, whatever the network does.
        dropped = self._dice.chance(faults.drop_callback)
        duplicated = self._dice.chance(faults.duplicate_callback)
        mismatched = self._dice.chance(faults.amount_mismatch)
        held_s = self._dice.fraction() * faults.reorder_delay_s if self._dice.chance(faults.reorder_callback) else 0.0
        if dropped:
            stats.dropped += 1
            logger.info("callback dropped by fault", extra={"order_id": order.order_id})
            return
        body = self.body_for(order, amount=order.amount + 1 if mismatched else order.amount)
        url = order.call_back_url
        copies = 2 if duplicated else 1
        stats.duplicated += copies - 1
        for copy in range(copies):
            name = f"callback {order.merchant_id}/{order.order_id} #{copy + 1}"
            self._background.later(held_s, lambda: self._deliver(url, body, stats), name)

    def body_for(self, order: Order, *, amount: int) -> dict[str, str]:
        """The callback body for a paid order, sealed with the key the gateway holds now."""
        data = {
            "order_id": order.order_id,
            "amount": str(amount),
            "tip": str(order.tip),
            "bizpay_order_id": order.bizpay_order_id or "",
            "merchant_id": order.merchant_id,
            "finish_time": order.trade_time or "",
        }
        signkey = self._keys.key_for(order.merchant_id)
        assert signkey is not None, "orders exist only for known merchants"
        return build_callback(data, order.merchant_id, signkey)

    async def _deliver(self, url: str, body: dict[str, str], stats: CallbackStats) -> None:
        delays = (0.0, *self._settings.callback_retry_s)
        for attempt, delay_s in enumerate(delays, start=1):
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            stats.attempts += 1
            status = await self._post(url, body)
            if status is not None and 200 <= status < 300:
                stats.sent += 1
                logger.info("callback delivered", extra={"url": url, "attempt": attempt})
                return
            stats.failed += 1
            logger.info("callback attempt failed", extra={"url": url, "attempt": attempt, "status": status})
        stats.dropped += 1
        logger.warning("callback given up after retries", extra={"url": url, "attempts": len(delays)})

    async def _post(self, url: str, body: dict[str, str]) -> int | None:
        if self._session is None:
            return None
        try:
            async with self._session.post(url, json=body, timeout=_ATTEMPT_TIMEOUT) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, OSError, TimeoutError):
            # Connection refused, reset or too slow: the receiver did not take it, so try again.
            return None
