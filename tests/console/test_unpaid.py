"""Unpaid orders: still-waiting orders counted and listed in aging buckets by creation time."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.console.support import create_order, next_link, sign_in

AGES = {
    "U5M": timedelta(minutes=5),
    "U30M": timedelta(minutes=30),
    "U3H": timedelta(hours=3),
    "U2D": timedelta(days=2),
    "U2D2": timedelta(days=2, hours=1),
}


def listed(html: str) -> list[str]:
    return re.findall(r'data-test="unpaid-row" data-order="([^"]+)"', html)


async def test_unpaid_orders_are_counted_in_aging_buckets(client: TestClient[Any, Any], db: asyncpg.Connection) -> None:
    for order_id, age in AGES.items():
        await create_order(
            db, order_id, 1000, tip=50, age=age, status="unpaid" if age > timedelta(hours=1) else "pending"
        )
    await create_order(db, "PAID", 1000, status="paid", age=timedelta(minutes=40))
    await create_order(db, "GONE", 1000, status="declined", age=timedelta(minutes=40))
    await sign_in(client, "victor")

    html = await (await client.get("/console/unpaid")).text()
    counts = dict(re.findall(r'data-test="bucket-([a-z0-9-]+)" data-count="(\d+)"', html))

    assert counts == {"lt15m": "1", "15m-1h": "1", "1h-24h": "1", "gt24h": "2"}
    assert listed(html) == ["U2D2", "U2D", "U3H", "U30M", "U5M"]  # oldest first
    assert "21.00 CAD" in html  # the two orders over a day: 2 x (10.00 + 0.50)


async def test_unpaid_bucket_and_merchant_filters_narrow_the_list(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    for order_id, age in AGES.items():
        await create_order(db, order_id, 1000, age=age)
    await create_order(db, "OTHER", 1000, age=timedelta(minutes=20), merchant_id="ON00004652")
    await sign_in(client, "victor")

    quarter = await (await client.get("/console/unpaid?bucket=15m-1h")).text()
    old = await (await client.get("/console/unpaid?bucket=gt24h")).text()
    other = await (await client.get("/console/unpaid?merchant_id=ON00004652")).text()
    bad = await client.get("/console/unpaid?bucket=old")

    assert listed(quarter) == ["U30M", "OTHER"]
    assert listed(old) == ["U2D2", "U2D"]
    assert listed(other) == ["OTHER"]
    assert bad.status == 400


async def test_unpaid_pages_return_every_order_exactly_once(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    for n in range(61):
        await create_order(db, f"PG{n:03d}", 100 + n, age=timedelta(minutes=n))
    await sign_in(client, "victor")
    seen: list[str] = []
    link: str | None = "/console/unpaid"
    while link:
        html = await (await client.get(link)).text()
        seen += listed(html)
        link = next_link(html)

    assert seen == [f"PG{n:03d}" for n in range(60, -1, -1)]


async def test_no_unpaid_orders_says_there_is_nothing_to_chase(client: TestClient[Any, Any]) -> None:
    await sign_in(client, "victor")

    html = await (await client.get("/console/unpaid")).text()

    assert 'data-test="empty-unpaid"' in html


async def test_orders_the_worker_gave_up_on_are_counted_and_marked(
    client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    await create_order(db, "FOLLOWED", 1000, age=timedelta(minutes=5))
    await create_order(db, "GAVEUP", 1000, status="unpaid", age=timedelta(days=2))
    await create_order(db, "GAVEUPREVIEW", 1000, status="review", age=timedelta(hours=2))
    await db.execute("UPDATE orders SET given_up_at = now() WHERE order_id LIKE 'GAVEUP%'")
    await sign_in(client, "victor")

    html = await (await client.get("/console/unpaid")).text()
    marked = re.findall(r'data-order="([^"]+)">(?:(?!</tr>).)*data-test="given-up"', html, re.S)

    assert re.search(r'data-test="given-up-count" data-count="2"', html)
    assert sorted(marked) == ["GAVEUP", "GAVEUPREVIEW"]
    assert listed(html) == ["GAVEUP", "GAVEUPREVIEW", "FOLLOWED"]
