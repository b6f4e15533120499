"""The shared world of the model-based tests gives back every connection it opened when it ends."""

from __future__ import annotations

from ottpay.keys import MerchantKeys
from tests.integration.model_world import world


def test_the_world_closes_its_redis_connections(database_url: str, redis_url: str, merchants: MerchantKeys) -> None:
    # The model tests keep their world in a class attribute: a connection left open here stays open until that is
    # rebound or the interpreter exits, and the collector then reports it in whatever test is running.
    with world(database_url, redis_url, merchants) as shared:

        async def use_redis() -> None:
            await shared.redis.ping()  # as create_payment's kick does

        shared.run(use_redis())
        pool = shared.redis.connection_pool
    assert [c for c in pool._available_connections if c.is_connected] == []
