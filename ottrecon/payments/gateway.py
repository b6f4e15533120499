"""OTT Pay clients for the configured merchants, sharing one HTTP session per worker process."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ottpay.keys import MerchantKeys

if TYPE_CHECKING:
    import aiohttp

    from ottpay.client import OttPayClient


class Gateway:
    """Hands out an OttPayClient per merchant. Requests are signed with the first configured key (the one
    OTT Pay holds); the client falls back to the others when the gateway has switched (decision 0029).

    session gives the shared HTTP session; it is called, and the HTTP client loaded, when a merchant's client is
    first asked for, so a worker that takes no payment never loads aiohttp (decision 0046). Settings checked
    the base URL and the timeout at start.
    """

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        merchants: MerchantKeys,
        operators: Mapping[str, str],
        *,
        base_url: str,
        timeout_s: float,
    ) -> None:
        self._session = session
        self._base_url = base_url
        self._timeout_s = timeout_s
        # Who may pay: a merchant with both a sign key and an operator id.
        signers = {
            merchant_id: (operator_id, merchants.keys_for(merchant_id))
            for merchant_id, operator_id in operators.items()
        }
        self._signers = {merchant_id: signer for merchant_id, signer in signers.items() if signer[1]}
        self._clients: dict[str, OttPayClient] = {}

    def client_for(self, merchant_id: str) -> OttPayClient | None:
        """The client for a merchant, or None when it lacks a sign key or an operator id."""
        client = self._clients.get(merchant_id)
        if client is None and merchant_id in self._signers:
            from ottpay.client import MerchantCredentials, OttPayClient

            operator_id, keys = self._signers[merchant_id]
            credentials = MerchantCredentials(merchant_id, operator_id, keys)
            client = OttPayClient(self._session(), credentials, base_url=self._base_url, timeout_s=self._timeout_s)
            self._clients[merchant_id] = client
        return client
