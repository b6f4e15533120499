"""Password hashes upgraded at sign-in: a weak configured scrypt hash is re-made with today's work factor.

The configuration (OTTRECON_CONSOLE_USERS) stays the source of truth: an upgraded hash is stored
with the SHA-256 of the configured hash it replaces and is used only while that is still the one
configured, so setting a new hash in the configuration resets the password at once. Replace weak
configured hashes too (`ottrecon hash-password`): whoever can read the environment can still
attack the old one. The upgrade protects what Postgres holds, and logs say which users need it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import asyncpg

from ottrecon.console.passwords import PasswordHash, hash_password
from ottrecon.db import translate_errors

logger = logging.getLogger("ottrecon.console")

# The stored upgrade of a user's configured hash, if the configured hash is still the same one.
FIND = "SELECT password_hash FROM console_password_upgrades WHERE username = $1 AND configured_sha256 = $2"
STORE = """
INSERT INTO console_password_upgrades (username, configured_sha256, password_hash) VALUES ($1, $2, $3)
ON CONFLICT (username) DO UPDATE
SET configured_sha256 = EXCLUDED.configured_sha256, password_hash = EXCLUDED.password_hash, upgraded_at = now()
"""


def _fingerprint(configured: PasswordHash) -> str:
    return hashlib.sha256(configured.encode().encode()).hexdigest()


async def effective_hash(pool: asyncpg.Pool, name: str, configured: PasswordHash) -> PasswordHash:
    """The hash to check name's password against: its upgrade if one is stored, else the configured one.

    Looked up for unknown names too (with the dummy hash), so both cost the same round trip.
    """
    async with translate_errors(), pool.acquire() as conn:
        stored = await conn.fetchval(FIND, name, _fingerprint(configured))
    if stored is None:
        return configured
    try:
        return PasswordHash.parse(stored)
    except ValueError:
        logger.error("stored console password upgrade is unreadable; using the configured hash", extra={"user": name})
        return configured


async def upgrade_if_weak(
    pool: asyncpg.Pool, name: str, configured: PasswordHash, checked: PasswordHash, password: str, n: int
) -> bool:
    """After a successful sign-in: store a hash with work factor n when the one checked is weaker.

    Returns True when an upgrade was stored. The new hash is computed on a thread (it takes as long
    as a sign-in check); the caller bounds how many run at once.
    """
    if not checked.weaker_than(n):
        return False
    encoded = await asyncio.to_thread(hash_password, password, n=n)
    async with translate_errors(), pool.acquire() as conn:
        await conn.execute(STORE, name, _fingerprint(configured), encoded)
    logger.warning(
        "console password hash upgraded at sign-in; replace the configured one with `ottrecon hash-password`",
        extra={"user": name, "from_n": checked.n, "to_n": n},
    )
    return True
