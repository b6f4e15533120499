"""Error pages in the console's look: what happened and what to do, never a stack trace."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from ottrecon.console.errors import BadFilter, PageError, UploadTooLarge
from ottrecon.console.render import render
from ottrecon.console.web import STREAMING, url
from ottrecon.errors import DatabaseUnavailable

logger = logging.getLogger("ottrecon.console")

GENERIC = {
    400: ("That request is not valid", "Go back and check what you entered."),
    403: ("Not allowed", "You do not have the right to do this. Ask someone with the finance role."),
    404: ("Page not found", "The address is wrong or the page no longer exists. Use the menu to find what you need."),
    405: ("Not possible here", "This address does not take that kind of request. Use the buttons on the pages."),
    413: ("File too large", "The file is larger than the console accepts. Split it, or ask on-call to import it."),
}
# Headers on every console answer: no framing, no sniffing, no referrer leaks; pages hold money data,
# so they are never cached. The console uses no scripts at all, and the policy says so.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure under /console/ into a page; unexpected ones are logged with their trace."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or request.get(STREAMING):
            raise
        title, advice = GENERIC.get(exc.status, ("Something went wrong", "Go back and try again."))
        return _page(request, exc.status, title, advice)
    except Exception as exc:
        if request.get(STREAMING):
            raise  # headers and rows are out: aiohttp cuts the connection, the download shows as failed
        return _failure_page(request, exc)


def _failure_page(request: web.Request, exc: Exception) -> web.Response:
    if isinstance(exc, PageError):
        return _page(request, exc.status, exc.title, exc.advice)
    if isinstance(exc, BadFilter):
        return _page(request, 400, "Some filters are not valid", "Fix them and try again.", exc.problems)
    if isinstance(exc, UploadTooLarge):
        return _page(request, 413, "File too large", str(exc))
    if isinstance(exc, DatabaseUnavailable):
        logger.warning("console: database unavailable", extra={"path": request.path})
        advice = "Nothing was changed. Wait a minute and try again; if it lasts, tell on-call."
        return _page(request, 503, "The database is not answering", advice)
    logger.error("console page failed", exc_info=exc, extra={"path": request.path, "method": request.method})
    advice = "This is a fault in the console, not something you did. It has been logged; tell on-call the time."
    return _page(request, 500, "Something went wrong on our side", advice)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: also covers streamed answers (CSV downloads) that bypass the middleware."""
    response.headers.update(SECURITY_HEADERS)
    if not request.path.startswith(url("/static/")):
        response.headers["Cache-Control"] = "no-store"


def _page(
    request: web.Request, status: int, title: str, advice: str, problems: list[str] | None = None
) -> web.Response:
    return render(
        request, "error.html", status=status, code=status, title=title, advice=advice, problems=problems or []
    )
