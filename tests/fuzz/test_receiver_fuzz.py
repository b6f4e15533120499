"""Fuzz the public receiver over real HTTP while genuine callbacks arrive beside the hostile ones.

Invariants, for every example: no 5xx (a 503 only as `queue_unavailable`, and Redis is up here);
every genuine callback sent at the same moment is acknowledged; every refusal is the documented
JSON error. At the end: the process is alive and healthy, its memory grew by a bounded amount, a
worker records every genuine callback, and everything the receiver accepted could be stored
(nothing dead-lettered).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from arq import ArqRedis
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import ConnectionPool

from ottpay.keys import parse_merchant_keys
from ottrecon.queue import DEAD_LETTER_KEY
from tests.conftest import MERCHANT, OLD_KEY
from tests.fuzz.support import free_port, fuzz_settings, running
from tests.integration.support import drain, make_callback, worker_settings
from tests.integration.test_metrics import scrape, value
from webhook.metrics import ENQUEUED as ENQUEUED_COUNTERS
from webhook.metrics import REFUSED as REFUSED_COUNTERS

GENUINE_PER_EXAMPLE = 4
ENQUEUED_OUTCOMES = tuple(ENQUEUED_COUNTERS)
REFUSED_REASONS = tuple(REFUSED_COUNTERS)
MEMORY_GROWTH_LIMIT = 64 * 1024 * 1024
_ids = itertools.count()

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Fragments that Python's json accepts and Postgres or our queue cannot hold, or that nest deeply.
poison = st.sampled_from(
    [
        "NaN",
        "-Infinity",
        "1e999",
        '"\\ud800"',
        '"\\udfff\\ud800"',
        '"\\u0000"',
        "[" * 5000 + "]" * 5000,
        '{"a":' * 3000 + "1" + "}" * 3000,
        "9" * 5000,
        '"' + "x" * 70_000 + '"',
    ]
)


# The genuine callback the mutations start from: one fixed body, so that Hypothesis can replay and
# shrink an example (a fresh order id per draw would change the lengths it drew against).
TEMPLATE: dict[str, Any] = make_callback("TEMPLATE1")


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> bytes:
    """A genuine callback with one structural or textual mutation."""
    body: dict[str, Any] = dict(TEMPLATE)
    kind = draw(st.sampled_from(["drop", "retype", "extra", "poison_field", "poison_extra", "many", "text"]))
    field = draw(st.sampled_from(sorted(body)))
    if kind == "drop":
        del body[field]
    elif kind == "retype":
        body[field] = draw(json_values)
    elif kind == "extra":
        body[draw(st.text(max_size=80))] = draw(json_values)
    elif kind == "many":
        body.update({f"x{n}": n for n in range(draw(st.integers(10, 40)))})
    if kind in ("poison_field", "poison_extra"):
        name = field if kind == "poison_field" else draw(st.text(min_size=1, max_size=8))
        text = json.dumps({k: v for k, v in body.items() if k != name})
        return (text[:-1] + f', "{name}": ' + draw(poison) + "}").encode()
    raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode()
    if kind == "text":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=8)) + raw[at + draw(st.integers(0, 4)) :]
    return raw


hostile_bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(lambda v: json.dumps(v).encode()),
    poison.map(str.encode),
    mutated_envelopes(),
)


async def _one_round(url: str, hostile: bytes, genuine: list[dict[str, str]]) -> tuple[Any, list[int]]:
    async with aiohttp.ClientSession() as session:

        async def post(data: bytes) -> tuple[int, Any]:
            async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as response:
                body = await response.read()
                return response.status, (response.content_type, body)

        results = await asyncio.gather(post(hostile), *(post(json.dumps(g).encode()) for g in genuine))
    return results[0], [status for status, _ in results[1:]]


def test_receiver_survives_hostile_bodies_beside_genuine_callbacks(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    env = {"REDIS_URL": redis_url, "HOST": "127.0.0.1", "PORT": str(port), "WEB_METRICS_PORT": str(metrics_port)}
    genuine_orders: list[str] = []
    posted = [0]
    with running("web", env, "/healthz", port, tmp_path / "web.log") as receiver:
        url = receiver.url + "/ottpay/callback"
        rss_start: list[int] = []

        @fuzz_settings(bounded=150, soak=20_000)
        @given(hostile=hostile_bodies)
        def one(hostile: bytes) -> None:
            if not rss_start:
                rss_start.append(receiver.rss_bytes())
            orders = [f"GEN{next(_ids)}" for _ in range(GENUINE_PER_EXAMPLE)]
            (status, (content_type, body)), genuine = asyncio.run(
                _one_round(url, hostile, [make_callback(o) for o in orders])
            )
            posted[0] += 1 + GENUINE_PER_EXAMPLE
            assert genuine == [200] * GENUINE_PER_EXAMPLE, (genuine, hostile[:200])
            genuine_orders.extend(orders)
            assert status in (200, 400, 413), (status, body[:300], hostile[:200])
            assert content_type == "application/json", (status, body[:300])
            answer = json.loads(body)
            if status != 200:
                assert answer["error"] in ("not_a_callback", "body_too_large"), answer
                assert all(isinstance(p, str) for p in answer["problems"]), answer

        one()
        assert receiver.alive(), receiver.logged()
        # Every request answered is counted once as received, and once as what became of it (the received counter
        # is bumped per request, the enqueued ones per Redis write, the refused ones per refusal).
        samples = asyncio.run(scrape(f"http://127.0.0.1:{metrics_port}/metrics"))
        enqueued = sum(value(samples, "ottrecon_callbacks_enqueued_total", outcome=o) for o in ENQUEUED_OUTCOMES)
        refused = sum(value(samples, "ottrecon_callbacks_refused_total", reason=r) for r in REFUSED_REASONS)
        received = value(samples, "ottrecon_callbacks_received_total")
        assert received == posted[0] == enqueued + refused, (received, posted[0], enqueued, refused)
        growth = receiver.rss_bytes() - rss_start[0]
        assert growth < MEMORY_GROWTH_LIMIT, f"receiver grew by {growth} bytes"
        assert "Traceback" not in receiver.logged(), receiver.logged()

    async def record_everything() -> None:
        await drain(worker_settings(database_url, redis_url, parse_merchant_keys(f"{MERCHANT}={OLD_KEY}")))

    asyncio.run(record_everything())
    recorded = asyncio.run(_recorded_orders(database_url))
    assert set(genuine_orders) <= recorded, sorted(set(genuine_orders) - recorded)[:10]
    assert asyncio.run(_dead_letters(redis_url)) == 0


async def _recorded_orders(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return {row["order_id"] for row in await conn.fetch("SELECT order_id FROM callbacks")}
    finally:
        await conn.close()


async def _dead_letters(redis_url: str) -> int:
    redis = ArqRedis(ConnectionPool.from_url(redis_url))
    try:
        return int(await redis.llen(DEAD_LETTER_KEY))  # type: ignore[misc]  # redis-py types list commands sync|async
    finally:
        await redis.aclose(close_connection_pool=True)
