"""CSRF protection: every form carries the session's token in a hidden field; every POST is checked.

Session cookies are SameSite=Lax already; the token also covers browsers that ignore SameSite and
same-site attackers. Sign-in (before any session exists) uses a double-submit cookie instead.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from ottrecon.console.errors import PageError
from ottrecon.console.web import session

FIELD = "csrf_token"
_REFUSED = PageError(
    403,
    "This form has expired",
    "The form was not sent from this console session (it may be from an old tab or a previous sign-in). "
    "Go back, reload the page and try again.",
)


def matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison; an empty expected token never matches."""
    return bool(expected) and hmac.compare_digest(expected.encode(), (given or "").encode())


def check(expected: str, given: str | None) -> None:
    """Raise the 403 page unless given is the expected token."""
    if not matches(expected, given):
        raise _REFUSED


async def checked_form(request: web.Request) -> dict[str, str]:
    """The POSTed url-encoded form's text fields (first value of each), after checking its CSRF token
    against the session's: a missing or wrong token is the 403 page and nothing is done."""
    form = await request.post()
    fields = {}
    for name, value in form.items():
        if isinstance(value, str) and name not in fields:
            fields[name] = value
    check(session(request).csrf_token, fields.get(FIELD))
    return fields
