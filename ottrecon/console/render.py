"""Jinja2 rendering for the console: one autoescaping environment, shared filters and page context."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from ottrecon.console.settings import ConsoleSettings
from ottrecon.console.times import format_age, format_time
from ottrecon.console.web import PREFIX, SESSION
from ottrecon.money import format_money

TEMPLATES = Path(__file__).with_name("templates")
ENV = web.AppKey("console_jinja", jinja2.Environment)
# Messages a redirect may ask the next page to show (?done=key): fixed texts, never echoed input.
NOTICES = {
    "acknowledged": "Alert acknowledged. Your note is in its history below.",
    "resolved": "Alert resolved. Your note is in its history below.",
    "replay_requested": "Replay requested: a worker checks the callback again within seconds. Refresh for the outcome.",
    "signed_out": "You are signed out.",
    "already_imported": "This exact file was imported before; nothing new was stored. Its differences are below.",
    "imported": "Statement imported and reconciled. The differences it produced are below.",
    "closed": "Closed. Those dates are frozen; later changes are booked as adjustments on the first open date.",
    "already_closed": "Those dates were already closed; nothing changed.",
    "reopened": "Reopened. The date shows its live figures again; its adjustments are folded back.",
}


def create_environment(settings: ConsoleSettings) -> jinja2.Environment:
    """Templates autoescape everything (ids and details come from untrusted callbacks and files)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = lambda cents: format_money(cents, settings.currency)
    env.filters["when"] = lambda at: format_time(at, settings.display_tz)
    env.filters["age"] = format_age
    env.globals["prefix"] = PREFIX
    env.globals["currency"] = settings.currency
    env.globals["display_tz"] = settings.display_tz
    env.globals["query"] = query
    return env


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """Render a page with the signed-in session (if any), its CSRF token and any notice."""
    session = request.get(SESSION)
    page = request.config_dict[ENV].get_template(template)
    html = page.render(
        session=session,
        user=session.user if session else None,
        csrf_token=session.csrf_token if session else "",
        path=request.path,
        notice=NOTICES.get(request.query.get("done", "")),
        **context,
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def query(params: Mapping[str, object], **changes: object) -> str:
    """A '?a=1&b=2' string from params with changes applied; empty and None values are left out."""
    merged = {**params, **changes}
    pairs = [(k, str(v)) for k, v in merged.items() if v is not None and v != ""]
    return "?" + urlencode(pairs) if pairs else ""
