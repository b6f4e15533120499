"""Who may see what: the sign-in requirement for every console page, cookies, and the finance role check."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.typedefs import Handler

from ottrecon.console import sessions
from ottrecon.console.errors import PageError
from ottrecon.console.render import render
from ottrecon.console.web import PREFIX, SESSION, pool, session, settings, url

COOKIE = "ottrecon_console"
LOGIN_COOKIE = "ottrecon_console_login"
# Reachable signed out: the sign-in form and the stylesheet it uses.
PUBLIC_PATHS = frozenset({url("/login")})
STATIC_PREFIX = url("/static/")
# Printable ASCII without spaces, up to a length any browser keeps.
_PLAIN_PATH = re.compile(r"[\x21-\x7e]{1,2000}")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Signed-out requests go to the sign-in page; an unconfigured console says so on every page."""
    if request.path == PREFIX:
        raise web.HTTPFound(url("/"))
    if request.path.startswith(STATIC_PREFIX):
        return await handler(request)
    console = settings(request)
    if not console.configured:
        return render(request, "not_configured.html", status=503)
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    found = await sessions.lookup(pool(request), request.cookies.get(COOKIE, ""), console.users)
    if found is None:
        # Come back to the page asked for after signing in (GETs only: a POST's form is gone anyway).
        target = request.path_qs if request.method == "GET" and request.path != url("/") else ""
        raise web.HTTPSeeOther(url("/login") + (f"?{urlencode({'next': target})}" if target else ""))
    request[SESSION] = found
    return await handler(request)


def require_finance(request: web.Request) -> None:
    """403 unless the signed-in user has the finance role (viewers only read)."""
    user = session(request).user
    if not user.can_write:
        raise PageError(
            403,
            "Your role cannot change anything",
            f"You are signed in as {user.name} with the viewer role, which can read every page but not "
            "acknowledge or resolve alerts, import statements or request replays. Ask someone with the "
            "finance role to do it.",
        )


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    """A console cookie: HttpOnly, SameSite=Lax, limited to the console's path, Secure unless configured off."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=url("/"),
        httponly=True,
        samesite="Lax",
        secure=not settings(request).insecure_cookies,
    )


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: only a path inside the console (never another site), in printable
    ASCII (a CR or LF would split the Location header; browsers send paths percent-encoded anyway)."""
    if target and target.startswith(url("/")) and _PLAIN_PATH.fullmatch(target) and "\\" not in target:
        return target
    return url("/")
