"""Sign-in and sign-out: scrypt-checked passwords, throttled failures, a fresh session per sign-in."""

from __future__ import annotations

import asyncio
import logging
import secrets

from aiohttp import web

from console import sessions
from console.auth import COOKIE, LOGIN_COOKIE, safe_next, set_cookie
from console.csrf import check, checked_form
from console.passwords import DUMMY_HASH
from console.render import render
from console.throttle import LoginThrottle
from console.web import pool, redirect, session, settings, url

logger = logging.getLogger("ottrecon.console")

THROTTLE = web.AppKey("console_throttle", LoginThrottle)
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
    name, password = form.get("username", "").strip()[:MAX_NAME], form.get("password", "")
    address = request.remote or "unknown"
    throttle = request.app[THROTTLE]
    if wait := throttle.retry_after(name, address):
        error = f"Too many failed sign-ins. Try again in {(wait + 59) // 60} minute(s), or ask an administrator."
        return _form(request, token, status=429, error=error, username=name, target=form.get("next"))
    user = settings(request).console.users.get(name)
    # An unknown name is checked against a dummy hash so that it costs as long as a wrong password.
    hashed = user.password if user else DUMMY_HASH
    matched = await asyncio.to_thread(hashed.matches, password)
    if user is None or not matched:
        throttle.failed(name, address)
        logger.warning("console sign-in failed", extra={"user": name, "address": address})
        # Slows guessing down without locking anyone out (the throttle does that past its limits).
        await asyncio.sleep(settings(request).console.failure_delay_s)
        error = "Wrong user name or password."
        return _form(request, token, status=401, error=error, username=name, target=form.get("next"))
    throttle.succeeded(name)
    logger.info("console sign-in", extra={"user": name, "address": address, "role": user.role})
    if old := request.cookies.get(COOKIE):
        await sessions.end(pool(request), sessions.token_digest(old))
    cookie, _ = await sessions.create(pool(request), user)
    response = redirect(safe_next(form.get("next")))
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


def _form(
    request: web.Request, token: str, *, status: int, error: str | None, username: str, target: str | None
) -> web.Response:
    return render(
        request, "login.html", status=status, login_token=token, error=error, username=username, next=safe_next(target)
    )
