"""The /sim endpoints: play the customer (pay, close), look at orders and stats, reset."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from ottpay.keys import is_sign_key
from simulator.core import SIM
from simulator.gateway import NotPayable, UnknownOrder
from simulator.state import Order
from simulator.statement import statement_csv

_ORDER = "/sim/orders/{merchant_id}/{order_id}"


def add_control_routes(router: web.UrlDispatcher) -> None:
    """Register the /sim endpoints (see docs/SIMULATOR.md)."""
    router.add_post(_ORDER + "/pay", pay_order)
    router.add_post(_ORDER + "/close", close_order)
    router.add_get("/sim/orders", list_orders)
    router.add_get(_ORDER, get_order)
    router.add_get("/sim/stats", stats)
    router.add_get("/sim/statement.csv", statement_csv)
    router.add_post("/sim/merchants/{merchant_id}/signkey", switch_signkey)
    router.add_post("/sim/reset", reset)


async def pay_order(request: web.Request) -> web.Response:
    """The customer pays a waiting ACTIVEPAY order now: 200 with the order, 404 unknown, 409 not payable.

    The callback is scheduled as for any payment, faults included.
    """
    sim = request.app[SIM]
    return _order_change(request, sim.gateway.pay_now)


async def close_order(request: web.Request) -> web.Response:
    """The customer never pays: a waiting order becomes orderclosed (200), 404 unknown, 409 not waiting."""
    sim = request.app[SIM]
    return _order_change(request, sim.gateway.close)


def _order_change(request: web.Request, change: Callable[[str, str], Order]) -> web.Response:
    merchant_id, order_id = request.match_info["merchant_id"], request.match_info["order_id"]
    try:
        order = change(merchant_id, order_id)
    except UnknownOrder:
        return web.json_response({"error": "unknown_order"}, status=404)
    except NotPayable:
        status = request.app[SIM].state.orders[(merchant_id, order_id)].status
        return web.json_response({"error": "not_payable", "status": status}, status=409)
    return web.json_response(order.to_json())


async def list_orders(request: web.Request) -> web.Response:
    """Every order the simulator holds, oldest first."""
    orders = request.app[SIM].state.orders.values()
    return web.json_response({"orders": [order.to_json() for order in orders]})


async def get_order(request: web.Request) -> web.Response:
    """One order, or 404."""
    key = (request.match_info["merchant_id"], request.match_info["order_id"])
    order = request.app[SIM].state.orders.get(key)
    if order is None:
        return web.json_response({"error": "unknown_order"}, status=404)
    return web.json_response(order.to_json())


async def stats(request: web.Request) -> web.Response:
    """Orders by status, double-charge evidence and callback counters."""
    return web.json_response(request.app[SIM].state.stats())


async def switch_signkey(request: web.Request) -> web.Response:
    """The merchant enters a new sign key in OTT Pay's portal: body {"signkey": KEY}. From now on requests
    must be signed with it and answers and new callbacks are sealed with it. 200, 404 unknown merchant,
    400 not a sign key. The key is never echoed or logged."""
    merchant_id = request.match_info["merchant_id"]
    try:
        body = json.loads(await request.read())
    except (UnicodeDecodeError, ValueError, RecursionError):
        body = None
    signkey = body.get("signkey") if isinstance(body, dict) else None
    if not isinstance(signkey, str) or not is_sign_key(signkey):
        return web.json_response(
            {"error": "bad_signkey", "expected": '{"signkey": "8-64 letters or digits"}'}, status=400
        )
    try:
        request.app[SIM].keys.switch(merchant_id, signkey)
    except KeyError:
        return web.json_response({"error": "unknown_merchant"}, status=404)
    return web.json_response({"merchant_id": merchant_id, "status": "switched"})


async def reset(request: web.Request) -> web.Response:
    """Forget every order, cancel pending callbacks and restart the seeded randomness."""
    await request.app[SIM].reset()
    return web.json_response({"status": "reset"})
