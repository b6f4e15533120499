"""The shared world of the model-based tests gives back every connection it opened when it ends."""

from __future__ import annotations

import time

import redis as sync_redis

from ottpay.keys import MerchantKeys
from tests.integration.model_world import world


def test_the_world_closes_its_redis_connections(database_url: str, redis_url: str, merchants: MerchantKeys) -> None:
    # The model tests keep their world in a class attribute: a connection left open here stays open until that is
    # rebound or the interpreter exits, and the collector then reports it in whatever test is running.
    with world(database_url, redis_url, merchants) as shared:

        async def client_id() -> int:
            return int(await shared.redis.client_id())  # a round trip, as create_payment's kick makes

        opened = shared.run(client_id())
    # Redis's own list of clients is the judge: what the server still holds open, whatever the library thinks.
    server = sync_redis.Redis.from_url(redis_url)
    try:
        for _ in range(100):  # the server notices a closed socket on its next turn
            if not server.client_list(client_id=[str(opened)]):
                break
            time.sleep(0.01)
        assert server.client_list(client_id=[str(opened)]) == []
    finally:
        server.close()
