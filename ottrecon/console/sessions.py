"""Console sessions in Postgres: a random token in the cookie, only its SHA-256 stored, with expiry.

A session ends after IDLE without a request or ABSOLUTE after sign-in, whichever comes first,
or at logout. The user's role is re-read from configuration on every request, so removing a
user (or changing a role) takes effect at once, without waiting for sessions to expire.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import timedelta

import asyncpg

from ottrecon.console.settings import ConsoleUser
from ottrecon.console.web import Session
from ottrecon.db import translate_errors

IDLE = timedelta(hours=8)
ABSOLUTE = timedelta(hours=12)

# A new session; it first expires after the idle period.
CREATE = """
INSERT INTO console_sessions (token_sha256, username, role, csrf_token, expires_at)
VALUES ($1, $2, $3, $4, now() + $5::interval)
"""
# Look a session up and extend it by the idle period, never past the absolute limit: one round trip.
TOUCH = """
UPDATE console_sessions
SET last_seen_at = now(), expires_at = least(created_at + $2::interval, now() + $3::interval)
WHERE token_sha256 = $1 AND expires_at > now()
RETURNING username, role, csrf_token
"""
DELETE = "DELETE FROM console_sessions WHERE token_sha256 = $1"
# Expired sessions are swept at each sign-in (console_sessions_expiry_idx); they are refused anyway.
PURGE_EXPIRED = "DELETE FROM console_sessions WHERE expires_at <= now()"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


async def create(pool: asyncpg.Pool, user: ConsoleUser) -> tuple[str, Session]:
    """Start a session; returns the cookie token (shown to nobody else) and the session."""
    token = secrets.token_urlsafe(32)
    session = Session(token_digest(token), user, secrets.token_urlsafe(32))
    async with translate_errors(), pool.acquire() as conn, conn.transaction():
        await conn.execute(PURGE_EXPIRED)
        await conn.execute(CREATE, session.token_sha256, user.name, user.role, session.csrf_token, min(IDLE, ABSOLUTE))
    return token, session


async def lookup(pool: asyncpg.Pool, token: str, users: Mapping[str, ConsoleUser]) -> Session | None:
    """The live session for a cookie token, extended; None when unknown, expired or its user is gone."""
    if not token or len(token) > 128:
        return None
    digest = token_digest(token)
    async with translate_errors(), pool.acquire() as conn:
        row = await conn.fetchrow(TOUCH, digest, ABSOLUTE, IDLE)
    if row is None:
        return None
    user = users.get(row["username"])
    if user is None or user.role != row["role"]:
        # Configuration changed since sign-in: that session must not keep its old rights.
        await end(pool, digest)
        return None
    return Session(digest, user, row["csrf_token"])


async def end(pool: asyncpg.Pool, token_sha256: str) -> None:
    """Delete a session (logout). Idempotent."""
    async with translate_errors(), pool.acquire() as conn:
        await conn.execute(DELETE, token_sha256)
