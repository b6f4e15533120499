"""Bearer-token authentication for the API (tokens compared as SHA-256 digests in constant time)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

# Reachable without a token: liveness and the API description.
PUBLIC_PATHS = frozenset({"/healthz", "/api/openapi.json", "/console"})
# The finance console signs people in with its own sessions (console/auth.py), not bearer tokens.
PUBLIC_PREFIXES = ("/console/",)
CLIENT = web.RequestKey("client", str)


def token_middleware(token_digests: Mapping[str, bytes]) -> Middleware:
    """401 unless `Authorization: Bearer <token>` matches a configured token; sets request[CLIENT]."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        client = _match(token.strip(), token_digests) if scheme.lower() == "bearer" else None
        if client is None:
            return web.json_response(
                {"error": "unauthorized", "problems": ["send Authorization: Bearer <token>"]},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        request[CLIENT] = client
        return await handler(request)

    return middleware


def _match(token: str, token_digests: Mapping[str, bytes]) -> str | None:
    # aiohttp decodes header bytes that are not UTF-8 as surrogates: encode them back, never raise.
    digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
    found = None
    # Compare against every digest so the time taken does not reveal which one matched.
    for client, expected in token_digests.items():
        if hmac.compare_digest(digest, expected):
            found = client
    return found
