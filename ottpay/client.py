"""The merchant's async client for OTT Pay's payment API: sealed requests, verified replies, no exceptions."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from ottpay.codes import GatewayReply, Outcome, classify_rsp_code
from ottpay.envelope import open_with_any_key, seal
from ottpay.errors import EnvelopeError
from ottpay.messages import GATEWAY_BASE_URL

logger = logging.getLogger("ottpay.client")

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
# parse_cents accepts at most 15 digits; a larger amount could never be read back.
_MAX_CENTS = 10**15 - 1
# How a gateway refuses a request it cannot authenticate (the simulator does; OTT Pay documents no
# separate code). Such a request was not acted on, so it may be sent again under another key.
_REFUSED_CODES = frozenset({"PARAM_INVALID", "PARAM_ERROR"})


@dataclass(frozen=True)
class MerchantCredentials:
    """Who the client speaks for; the sign keys never appear in repr().

    signkeys are the merchant's accepted keys, the one OTT Pay currently holds first (during a
    rotation the new key follows it; docs/OPERATIONS.md, decision 0029).
    """

    merchant_id: str
    operator_id: str
    signkeys: tuple[str, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.signkeys, str) or not self.signkeys or not all(self.signkeys):
            raise ValueError("signkeys must be a non-empty tuple of sign keys")


class OttPayClient:
    """Speaks PROTOCOL §1-§3 over a caller-owned aiohttp session.

    No method raises for gateway or transport problems; each returns a GatewayReply. Nothing
    is retried here: after an UNKNOWN outcome the caller resolves with status_query before
    resubmitting, and a resubmission reuses the same order id (the gateway answers ORDER_USED
    rather than charging twice). ValueError/TypeError are raised only for invalid arguments.
    """

    DEFAULT_BASE_URL = GATEWAY_BASE_URL

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: MerchantCredentials,
        *,
        base_url: str = DEFAULT_BASE_URL,
        path: str = "/processV2",
        timeout_s: float = 15.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        url = URL(base_url.rstrip("/") + "/" + path.lstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url must be an absolute http(s) URL")
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        self._session = session
        self._credentials = credentials
        # Index of the key the gateway is believed to hold: the first configured one until an answer
        # shows that it switched (then every later request is signed with the one that worked).
        self._current = 0
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)

    async def passive_pay(
        self, *, order_id: str, amount: int, auth_code: str, biz_type: str, tip: int = 0, sale_num: str | None = None
    ) -> GatewayReply:
        """Charge the wallet whose barcode was scanned (auth_code). Not idempotent by itself: on
        UNKNOWN, query order_id before paying again, and any retry must reuse order_id."""
        data = {"order_id": _text("order_id", order_id), "operator_id": self._credentials.operator_id}
        data.update(amount=_cents("amount", amount, minimum=1), tip=_cents("tip", tip, minimum=0))
        if sale_num:  # optional: None or "" means no invoice number, and the key is left out
            data["sale_num"] = sale_num
        data.update(auth_code=_text("auth_code", auth_code), biz_type=_text("biz_type", biz_type))
        return await self._call("PASSIVEPAY", data, order_id)

    async def active_pay(
        self, *, order_id: str, amount: int, biz_type: str, call_back_url: str, tip: int = 0
    ) -> GatewayReply:
        """Create a QR order; data["code_url"] is the QR payload. The payment result arrives later
        as a callback to call_back_url (or by status_query)."""
        data = {"order_id": _text("order_id", order_id), "operator_id": self._credentials.operator_id}
        data.update(amount=_cents("amount", amount, minimum=1), tip=_cents("tip", tip, minimum=0))
        data.update(biz_type=_text("biz_type", biz_type), call_back_url=_text("call_back_url", call_back_url))
        return await self._call("ACTIVEPAY", data, order_id)

    async def status_query(self, order_id: str) -> GatewayReply:
        """Ask where an order stands; read data["order_status"] with classify_order_status. Safe to
        repeat. not_found=True means the gateway has no record of order_id."""
        return await self._call("STATUS_QUERY", {"order_id": _text("order_id", order_id)}, order_id)

    async def refund(self, *, ori_order_id: str, refund_order_id: str, refund_amount: int) -> GatewayReply:
        """Refund part or all of a paid order. Retry only with the same refund_order_id, so that a
        refund that did happen is answered ORDER_USED instead of refunding twice."""
        data = {"ori_order_id": _text("ori_order_id", ori_order_id)}
        data["refund_amt"] = _cents("refund_amount", refund_amount, minimum=1)
        data["order_id"] = _text("refund_order_id", refund_order_id)
        return await self._call("REFUND", data, None)

    async def _call(self, action: str, data: dict[str, str], expected_order_id: str | None) -> GatewayReply:
        """Send under the key the gateway is believed to hold; if the gateway refuses the request
        unsigned (PARAM_INVALID/PARAM_ERROR, nothing done), send it again under each other accepted
        key, so that OTT Pay switching keys mid-rotation fails nothing. Returns the first accepted
        answer, else the answer under the current key."""
        keys = self._credentials.signkeys
        order = [self._current, *(i for i in range(len(keys)) if i != self._current)]
        first: GatewayReply | None = None
        for index in order:
            reply = await self._call_with_key(action, data, expected_order_id, index)
            if not _refused(reply) or len(keys) == 1:
                if index != self._current:
                    self._learn(index, action)
                return reply
            first = first or reply
        assert first is not None
        return first

    def _learn(self, index: int, action: str) -> None:
        # Only positions are logged: the keys themselves are secrets.
        logger.warning(
            "ottpay sign key switched: the gateway accepts key %d of %d for merchant %s",
            index + 1,
            len(self._credentials.signkeys),
            self._credentials.merchant_id,
            extra={"merchant_id": self._credentials.merchant_id, "key_position": index + 1, "action": action},
        )
        self._current = index

    async def _call_with_key(
        self, action: str, data: dict[str, str], expected_order_id: str | None, key_index: int
    ) -> GatewayReply:
        creds = self._credentials
        sealed, md5 = seal(data, creds.signkeys[key_index])
        body = {"action": action, "version": "1.0", "merchant_id": creds.merchant_id}
        body.update(operator_id=creds.operator_id, data=sealed, md5=md5)
        started = time.monotonic()
        try:
            status, raw = await self._post(body)
        # ConnectionTimeoutError and ClientConnectorError are raised before any byte of the
        # request is written; every other failure may come after the gateway acted.
        except aiohttp.ConnectionTimeoutError:
            reply = self._failed(action, started, "connect_timeout", sent=False)
        except aiohttp.ClientConnectorError:
            reply = self._failed(action, started, "connection_error", sent=False)
        except TimeoutError:
            reply = self._failed(action, started, "timeout", sent=True)
        except (aiohttp.ClientError, OSError):
            reply = self._failed(action, started, "connection_lost", sent=True)
        else:
            reply = self._interpret(action, status, raw, expected_order_id, started)
        logger.info(
            "ottpay %s %s",
            action,
            reply.outcome,
            extra={
                "action": action,
                "order_id": data.get("order_id"),
                "rsp_code": reply.rsp_code,
                "outcome": str(reply.outcome),
                "error": reply.error,
                "latency_ms": reply.latency_ms,
            },
        )
        return reply

    async def _post(self, body: dict[str, str]) -> tuple[int, bytes]:
        async with self._session.post(self._url, json=body, headers=_HEADERS, timeout=self._timeout) as response:
            return response.status, await response.read()

    def _interpret(
        self, action: str, status: int, raw: bytes, expected_order_id: str | None, started: float
    ) -> GatewayReply:
        if not 200 <= status < 300:
            return self._failed(action, started, f"http_{status}", sent=True)
        body = _json_object(raw)
        if body is None or not isinstance(body.get("rsp_code"), str):
            return self._failed(action, started, "bad_response", sent=True)
        rsp_code: str = body["rsp_code"]
        rsp_msg = body.get("rsp_msg") if isinstance(body.get("rsp_msg"), str) else None
        data: dict[str, str] = {}
        sealed, md5 = body.get("data"), body.get("md5")
        if sealed not in (None, ""):
            if not isinstance(sealed, str) or not isinstance(md5, str):
                return self._failed(action, started, "bad_response", sent=True)
            try:
                # Any accepted key: an answer may be sealed under the key the gateway switched to.
                data, _ = open_with_any_key(sealed, md5, self._keys_current_first(), self._credentials.merchant_id)
            except EnvelopeError as exc:
                # rsp_code and rsp_msg sit outside the signed data: with data that does not
                # verify, nothing in the body can be trusted, so none of it is passed on.
                return self._failed(action, started, exc.reason, sent=True)
        outcome = classify_rsp_code(rsp_code)
        # The md5 signs only data, never rsp_code: a SUCCESS is believed only with signed data
        # about the same order.
        if outcome is Outcome.SUCCESS and not data:
            return self._failed(action, started, "unsigned_success", sent=True)
        if expected_order_id is not None and data.get("order_id", expected_order_id) != expected_order_id:
            return self._failed(action, started, "order_mismatch", sent=True)
        not_found = action == "STATUS_QUERY" and rsp_code.strip() == "FAIL"
        latency = _elapsed_ms(started)
        return GatewayReply(action, outcome, rsp_code, rsp_msg, data, latency, True, None, not_found)

    def _keys_current_first(self) -> list[str]:
        keys = self._credentials.signkeys
        return [keys[self._current], *(key for i, key in enumerate(keys) if i != self._current)]

    @staticmethod
    def _failed(action: str, started: float, error: str, *, sent: bool) -> GatewayReply:
        return GatewayReply(action, Outcome.UNKNOWN, None, None, {}, _elapsed_ms(started), sent, error)


def _refused(reply: GatewayReply) -> bool:
    """The gateway rejected the request without signed data: perhaps it could not authenticate it."""
    return reply.rsp_code is not None and reply.rsp_code.strip() in _REFUSED_CODES and not reply.data


def _text(name: str, value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _cents(name: str, value: int, *, minimum: int) -> str:
    # bool is an int subclass and float is never an amount (PROTOCOL §1): both are caller bugs.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int number of cents, not {type(value).__name__}")
    if not minimum <= value <= _MAX_CENTS:
        raise ValueError(f"{name} must be between {minimum} and {_MAX_CENTS} cents")
    return str(value)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
