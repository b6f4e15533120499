"""The public receiver under hostile input: one bad body never hurts its neighbours, and never a 500."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from arq import ArqRedis

from ottpay.keys import parse_merchant_keys
from ottrecon.queue import QUEUE_NAME
from tests.conftest import MERCHANT, OLD_KEY
from tests.integration.support import drain, make_callback, receiver, worker_settings

LONE_SURROGATE = b'{"rsp_code":"SUCCESS","rsp_msg":"\\ud800","merchant_id":"M1","data":"QUJD","md5":"X"}'


async def test_lone_surrogate_among_genuine_callbacks_fails_only_itself(
    redis_url: str, redis: ArqRedis, database_url: str, db: asyncpg.Connection
) -> None:
    genuine = [make_callback(f"ISO{n}") for n in range(20)]
    async with receiver(redis_url) as client:
        bad_request = client.post("/ottpay/callback", data=LONE_SURROGATE)
        responses = await asyncio.gather(bad_request, *(client.post("/ottpay/callback", json=b) for b in genuine))
        bad, good = responses[0], responses[1:]
        assert bad.status == 400
        assert (await bad.json())["error"] == "not_a_callback"
        assert [r.status for r in good] == [200] * 20
    await drain(worker_settings(database_url, redis_url, parse_merchant_keys(f"{MERCHANT}={OLD_KEY}")))
    assert await db.fetchval("SELECT count(*) FROM callbacks") == 20


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 30_000 + b"1" + b"}" * 30_000,
        b"[" * 60_000,
    ],
    ids=["deep-array", "deep-object", "unclosed"],
)
async def test_deeply_nested_json_is_a_400(redis_url: str, body: bytes) -> None:
    async with receiver(redis_url) as client:
        response = await client.post("/ottpay/callback", data=body[: 64 * 1024])
        assert response.status == 400, await response.text()
        assert (await response.json())["error"] == "not_a_callback"


def _with(extra: str) -> bytes:
    genuine = make_callback("NUM1")
    fields = ",".join(f'"{k}":"{v}"' for k, v in genuine.items())
    return ("{" + ",".join(filter(None, [fields, extra])) + "}").encode()


@pytest.mark.parametrize(
    "extra",
    ['"x":NaN', '"x":Infinity', '"x":-Infinity', '"x":1e999', '"x":-1e999', '"x":[1e400]'],
)
async def test_numbers_jsonb_cannot_store_are_refused_at_the_edge(redis_url: str, redis: ArqRedis, extra: str) -> None:
    async with receiver(redis_url) as client:
        response = await client.post("/ottpay/callback", data=_with(extra))
        assert response.status == 400, await response.text()
        assert (await response.json())["error"] == "not_a_callback"
    assert await redis.zcard(QUEUE_NAME) == 0


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"extra": {"nested": 1}}, "extra"),
        ({"extra": [1, 2]}, "extra"),
        ({f"f{n}": "v" for n in range(40)}, "extra fields"),
        ({"x" * 300: "v"}, "name"),
        ({"note": "v" * 5000}, "note"),
        ({"rsp_msg": "m" * 5000}, "rsp_msg"),
        ({"merchant_id": "M" * 500}, "merchant_id"),
        ({"md5": "F" * 500}, "md5"),
        ({"k\u0000": "v"}, "NUL"),
    ],
    ids=["nested", "array", "too-many", "long-name", "long-extra", "long-msg", "long-mid", "long-md5", "nul-key"],
)
async def test_only_the_documented_flat_shape_is_queued(
    redis_url: str, redis: ArqRedis, change: dict[str, Any], word: str
) -> None:
    body = make_callback("SHAPE1") | change
    async with receiver(redis_url) as client:
        response = await client.post("/ottpay/callback", json=body)
        assert response.status == 400, await response.text()
        answer = await response.json()
        assert answer["error"] == "not_a_callback"
        assert any(word in problem for problem in answer["problems"]), answer
    assert await redis.zcard(QUEUE_NAME) == 0


async def test_scalar_extra_fields_and_escaped_nul_free_text_are_still_accepted(
    redis_url: str, redis: ArqRedis
) -> None:
    # Unknown extra fields must be kept (PROTOCOL §4): flat scalars of a sane size pass.
    body = make_callback("SHAPE2") | {"sign_type": "MD5", "version": 1, "test": False, "memo": None, "rate": 1.25}
    text = _with('"note":"a\\\\u0000b"')
    async with receiver(redis_url) as client:
        assert (await client.post("/ottpay/callback", json=body)).status == 200
        # A backslash followed by the text u0000 is not a NUL character.
        assert (await client.post("/ottpay/callback", data=text)).status == 200
    assert await redis.zcard(QUEUE_NAME) >= 1
