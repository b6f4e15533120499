"""The receiver benchmark's baseline: a bare aiohttp app that reads a POST body and answers small JSON."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from aiohttp import web

# The same acknowledgement the receiver sends, so both responses are the same size.
ACK = {"rsp_code": "SUCCESS", "rsp_msg": "success"}


async def receive(request: web.Request) -> web.Response:
    """Read the whole body (as the receiver does) and acknowledge it; no parsing, no queue."""
    await request.read()
    return web.json_response(ACK)


async def healthz(request: web.Request) -> web.Response:
    """Readiness probe used by the benchmark before it starts wrk."""
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    """Same routes and body limit as webhook.app.create_app, none of its work."""
    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/ottpay/callback", receive)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Serve on 127.0.0.1 with the same run_app options as `ottrecon web` (no access log)."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(create_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
