"""OTT Pay clients for the configured merchants, sharing one HTTP session per worker process."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from ottpay.client import MerchantCredentials, OttPayClient
from ottpay.keys import MerchantKeys


class Gateway:
    """Hands out an OttPayClient per merchant. Requests are signed with the first configured key (the one
    OTT Pay holds); the client falls back to the others when the gateway has switched (decision 0029)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        merchants: MerchantKeys,
        operators: Mapping[str, str],
        *,
        base_url: str,
        timeout_s: float,
    ) -> None:
        self._clients: dict[str, OttPayClient] = {}
        for merchant_id, operator_id in operators.items():
            keys = merchants.keys_for(merchant_id)
            if keys:
                credentials = MerchantCredentials(merchant_id, operator_id, keys)
                self._clients[merchant_id] = OttPayClient(session, credentials, base_url=base_url, timeout_s=timeout_s)

    def client_for(self, merchant_id: str) -> OttPayClient | None:
        """The client for a merchant, or None when it lacks a sign key or an operator id."""
        return self._clients.get(merchant_id)
