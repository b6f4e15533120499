"""Sign-in and sign-out: scrypt-checked passwords, throttled attempts, a fresh session per sign-in."""

from __future__ import annotations

import asyncio
import logging
import secrets

from aiohttp import web

from ottrecon.console import password_upgrades, sessions
from ottrecon.console.auth import COOKIE, LOGIN_COOKIE, safe_next, set_cookie
from ottrecon.console.client_address import client_address
from ottrecon.console.csrf import check, checked_form
from ottrecon.console.passwords import PasswordHash, dummy_hash
from ottrecon.console.render import render
from ottrecon.console.throttle import LoginThrottle
from ottrecon.console.web import pool, redirect, session, settings, url

logger = logging.getLogger("ottrecon.console")

THROTTLE = web.AppKey("console_throttle", LoginThrottle)
# scrypt checks running at once: each holds 128 MiB for about 0.3 s, so a burst of sign-ins (or
# guesses) waits here instead of exhausting the api process's memory and its thread pool.
HASHING = web.AppKey("console_hashing", asyncio.Semaphore)
MAX_CONCURRENT_HASHES = 2
LOGIN_TOKEN_MAX_AGE = 3600
MAX_NAME = 64


async def login_form(request: web.Request) -> web.Response:
    """GET /console/login: the sign-in form, with a double-submit token (there is no session yet)."""
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = _form(request, token, status=200, error=None, username="", target=request.query.get("next"))
    set_cookie(request, response, LOGIN_COOKIE, token, LOGIN_TOKEN_MAX_AGE)
    return response


async def login(request: web.Request) -> web.Response:
    """POST /console/login: a session cookie and a redirect, or the form again with what went wrong."""
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    token = request.cookies.get(LOGIN_COOKIE, "")
    check(token, form.get("csrf_token"))
    console = settings(request)
    name, password = form.get("username", "").strip()[:MAX_NAME], form.get("password", "")
    # Decided before anything is stored: a target that cannot be a header value is the overview.
    target = safe_next(form.get("next"))
    address = client_address(request, console.trusted_proxies)
    throttle = request.app[THROTTLE]
    # Counted before the slow check is awaited, so guesses sent at once cannot all slip through.
    if wait := throttle.begin(name, address):
        error = f"Too many failed sign-ins. Try again in {(wait + 59) // 60} minute(s), or ask an administrator."
        return _form(request, token, status=429, error=error, username=name, target=target)
    user = console.users.get(name)
    # An unknown name is checked against a dummy hash so that it costs as long as a wrong password.
    configured = user.password if user else dummy_hash(console.password_n)
    async with request.app[HASHING]:
        hashed = await password_upgrades.effective_hash(pool(request), name, configured)
        matched = await asyncio.to_thread(hashed.matches, password)
    if user is None or not matched:
        # Never the typed name: people type their password into the name field.
        logger.warning("console sign-in failed", extra={"address": address})
        # Slows guessing down without locking anyone out (the throttle does that past its limits).
        await asyncio.sleep(console.failure_delay_s)
        error = "Wrong user name or password."
        return _form(request, token, status=401, error=error, username=name, target=target)
    throttle.succeeded(name, address)
    logger.info("console sign-in", extra={"user": name, "address": address, "role": user.role})
    await _upgrade(request, name, configured, hashed, password)
    if old := request.cookies.get(COOKIE):
        await sessions.end(pool(request), sessions.token_digest(old))
    cookie, _ = await sessions.create(pool(request), user)
    response = redirect(target)
    set_cookie(request, response, COOKIE, cookie, int(sessions.ABSOLUTE.total_seconds()))
    response.del_cookie(LOGIN_COOKIE, path=url("/"))
    return response


async def logout(request: web.Request) -> web.Response:
    """POST /console/logout: the session is deleted from the database, the cookie cleared."""
    await checked_form(request)
    await sessions.end(pool(request), session(request).token_sha256)
    response = redirect(url("/login?done=signed_out"))
    response.del_cookie(COOKIE, path=url("/"))
    return response


async def _upgrade(
    request: web.Request, name: str, configured: PasswordHash, checked: PasswordHash, password: str
) -> None:
    async with request.app[HASHING]:
        await password_upgrades.upgrade_if_weak(
            pool(request), name, configured, checked, password, settings(request).password_n
        )


def _form(
    request: web.Request, token: str, *, status: int, error: str | None, username: str, target: str | None
) -> web.Response:
    return render(
        request, "login.html", status=status, login_token=token, error=error, username=username, next=safe_next(target)
    )
