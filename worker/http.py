"""The worker's one HTTP session (OTT Pay requests, alert webhooks), made when first needed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp


class LazySession:
    """Call it for the shared aiohttp session; the first call loads aiohttp and makes the session.

    A worker that takes no payment and sends no alert never pays for aiohttp's import (about a
    tenth of a second, much of it building TLS contexts) before its first callback (decision 0046).
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def __call__(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        """Close the session if one was made; a later call makes a new one."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
