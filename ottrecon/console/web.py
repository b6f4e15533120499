"""Request plumbing shared by the console's pages: app keys, the signed-in user, pool and queue handles."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from aiohttp import web
from arq import ArqRedis

from ottrecon.console.settings import ConsoleSettings, ConsoleUser

# Where api/app.py mounts the console; every console URL starts with it.
PREFIX = "/console"
SETTINGS = web.AppKey("console_settings", ConsoleSettings)
# The database the console reads (its offloaded jobs open their own connection to it).
DATABASE_URL = web.AppKey("console_database_url", str)
# The process's pool and queue client: set by whoever mounts the console (the api shares its own).
POOL = web.AppKey("console_pool", asyncpg.Pool)
REDIS = web.AppKey("console_redis", ArqRedis)


@dataclass(frozen=True)
class Session:
    """A signed-in user's session: who, and the token every form must carry back."""

    token_sha256: str
    user: ConsoleUser
    csrf_token: str


SESSION = web.RequestKey("console_session", Session)
# Set once a streamed answer has started: an error after that can only cut the connection.
STREAMING = web.RequestKey("console_streaming", bool)


def settings(request: web.Request) -> ConsoleSettings:
    return request.config_dict[SETTINGS]


def database_url(request: web.Request) -> str:
    return request.config_dict[DATABASE_URL]


def pool(request: web.Request) -> asyncpg.Pool:
    # The api process's pool (api/app.py sets it); the console shares it.
    return request.config_dict[POOL]


def redis(request: web.Request) -> ArqRedis:
    return request.config_dict[REDIS]


def session(request: web.Request) -> Session:
    """The signed-in session (the auth middleware guarantees one on every non-public page)."""
    return request[SESSION]


def url(path: str) -> str:
    """A console path ('/ledger') as an absolute path under the mount point."""
    return PREFIX + path


def redirect(location: str) -> web.Response:
    """303 See Other: after a POST the browser GETs the next page, so a reload never re-sends the form."""
    return web.Response(status=303, headers={"Location": location})
