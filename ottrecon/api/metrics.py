"""The API's Prometheus metrics: requests by route and status, and the public GET /metrics."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

METRICS_PATH = "/metrics"
REQUESTS = Counter("ottrecon_api_requests_total", "API requests answered, by route and status.", ["route", "status"])


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request; answer GET /metrics itself, ahead of the token check.

    It must run first: scrapers cannot send a bearer token, and aiohttp applies an app's
    middlewares to its sub-apps too, so a sub-app could not make /metrics public. The
    exposition holds counts only, no payment data, and the API binds to loopback by default.
    """
    if request.path == METRICS_PATH and request.method == "GET":
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
    # The route's pattern (/api/payments/{payment_id}), never the raw path: one series per route.
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        REQUESTS.labels(route=route, status=str(exc.status)).inc()
        raise
    except Exception:
        REQUESTS.labels(route=route, status="500").inc()
        raise
    REQUESTS.labels(route=route, status=str(response.status)).inc()
    return response
