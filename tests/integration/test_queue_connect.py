"""`ottrecon.queue.connect` gives a client that owns its connections: closing the client closes them."""

from __future__ import annotations

import asyncio

from arq import ArqRedis

from ottrecon.queue import connect


async def _connected(redis: ArqRedis, client_id: int) -> bool:
    # Redis's own list of clients: what the server still holds open, whatever the client library thinks.
    return bool(await redis.client_list(client_id=[str(client_id)]))


async def test_a_plain_close_of_a_connected_client_closes_its_connections(redis_url: str, redis: ArqRedis) -> None:
    client = connect(redis_url, 2.0)
    client_id = await client.client_id()
    assert await _connected(redis, client_id)

    await client.aclose()  # as every caller closes a client it was handed: no pool flag to remember

    for _ in range(100):  # the server notices a closed socket on its next turn
        if not await _connected(redis, client_id):
            break
        await asyncio.sleep(0.01)
    assert not await _connected(redis, client_id)
