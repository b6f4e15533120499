"""The sign key the simulated gateway holds for each merchant: one, as OTT Pay's portal does, switchable mid-run."""

from __future__ import annotations

from ottpay.keys import MerchantKeys


class HeldKeys:
    """One key per merchant: requests must be signed with it, answers and callbacks are sealed with it.

    It starts as the merchant's first key in OTTPAY_MERCHANTS (the key OTT Pay holds, as the service reads
    the same variable); switch() is the merchant entering a new key in OTT Pay's portal. repr() shows no key.
    """

    def __init__(self, merchants: MerchantKeys) -> None:
        self._configured = {merchant_id: keys[0] for merchant_id, keys in merchants.items()}
        self._held = dict(self._configured)

    def __repr__(self) -> str:
        return f"HeldKeys({', '.join(self._held)})"

    def key_for(self, merchant_id: str) -> str | None:
        """The key the gateway holds for a merchant, or None for a merchant it does not know."""
        return self._held.get(merchant_id)

    def switch(self, merchant_id: str, signkey: str) -> None:
        """From now on only signkey is accepted, and used, for this known merchant (KeyError otherwise).

        Callbacks already sealed (waiting or being retried) keep the key they were sealed with, as a real
        gateway's queued deliveries would.
        """
        if merchant_id not in self._held:
            raise KeyError(merchant_id)
        self._held[merchant_id] = signkey

    def reset(self) -> None:
        """Back to the configured keys (POST /sim/reset)."""
        self._held = dict(self._configured)
