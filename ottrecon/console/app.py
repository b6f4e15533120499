"""The console's aiohttp sub-application, mounted by api/app.py under /console/."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from ottrecon.console.auth import auth_middleware
from ottrecon.console.error_pages import add_security_headers, error_pages
from ottrecon.console.offload import OFFLOAD_SLOTS, OffloadSlots
from ottrecon.console.pages import alerts, closing, evidence, ledger, login, overview, rejected, statements, unpaid
from ottrecon.console.render import ENV, create_environment
from ottrecon.console.settings import ConsoleSettings
from ottrecon.console.throttle import LoginThrottle
from ottrecon.console.web import DATABASE_URL, SETTINGS

STATIC = Path(__file__).with_name("static")


def create_console_app(settings: ConsoleSettings, database_url: str) -> web.Application:
    """Every page needs a signed-in user except the sign-in form and the stylesheet.

    Whoever mounts it sets web.POOL and web.REDIS on its own app (the console shares them).
    """
    # error_pages is outermost so that failures in the auth check (database down) get a page too.
    app = web.Application(middlewares=[error_pages, auth_middleware])
    app[SETTINGS] = settings
    app[DATABASE_URL] = database_url
    app[ENV] = create_environment(settings)
    app[login.THROTTLE] = LoginThrottle()
    app[login.HASHING] = asyncio.Semaphore(login.MAX_CONCURRENT_HASHES)
    app[OFFLOAD_SLOTS] = OffloadSlots(settings.max_offloaded)
    app.on_response_prepare.append(add_security_headers)
    routes = app.router
    routes.add_get("/", overview.show)
    routes.add_get("/login", login.login_form)
    routes.add_post("/login", login.login)
    routes.add_post("/logout", login.logout)
    routes.add_get("/ledger", ledger.show)
    # No HEAD: it would run a whole export only to throw the body away.
    routes.add_get("/ledger.csv", ledger.download, allow_head=False)
    routes.add_get("/order", evidence.show)
    routes.add_get("/alerts", alerts.show)
    routes.add_post("/alerts/{alert_id}/acknowledge", alerts.acknowledge)
    routes.add_post("/alerts/{alert_id}/resolve", alerts.resolve)
    routes.add_get("/unpaid", unpaid.show)
    routes.add_get("/rejected", rejected.show)
    routes.add_get("/rejected/{rejected_id}", rejected.detail)
    routes.add_post("/rejected/{rejected_id}/replay", rejected.replay)
    routes.add_get("/statements", statements.show)
    routes.add_post("/statements", statements.upload)
    routes.add_get("/statements/{import_id}", statements.detail)
    routes.add_get("/closes", closing.show)
    routes.add_post("/closes", closing.close)
    routes.add_post("/closes/reopen", closing.reopen)
    routes.add_get("/close-report", closing.report)
    routes.add_static("/static/", STATIC, append_version=False)
    return app
