"""A Redis database index claimed the way test sessions claim theirs, so neither flushes the other's."""

from __future__ import annotations

import uuid
from types import TracebackType

import redis

from bench.support import BenchError, with_redis_db

# The key tests/conftest.py sets (NX) to claim a database for one test session. Holding it
# keeps concurrent test sessions off the benchmark's database and the benchmark off theirs.
LOCK_KEY = "ottrecon:test-session"
# Long enough for any benchmark run; renewed on every flush.
_LOCK_TTL_S = 4 * 3600
# Tests claim from 15 downwards, so the benchmark looks from 1 upwards; 0 is `make run`'s.
_SEARCH_ORDER = range(1, 16)


class ClaimedRedisDb:
    """Claims an empty Redis db (or the one asked for) for one benchmark; flushes it on exit.

    Only a database whose lock this claim holds is ever flushed, and a flush keeps the lock
    (FLUSHDB and SET in one MULTI/EXEC), so a test session can never slip in between.
    """

    def __init__(self, server_url: str, index: int | None = None) -> None:
        self._server_url = server_url
        self._wanted = index
        self._token = f"bench:{uuid.uuid4().hex}"
        self.index = -1

    @property
    def url(self) -> str:
        """The claimed database's URL."""
        if self.index < 0:
            raise BenchError("no Redis database claimed yet")
        return with_redis_db(self._server_url, self.index)

    def __enter__(self) -> ClaimedRedisDb:
        candidates = [self._wanted] if self._wanted is not None else list(_SEARCH_ORDER)
        for index in candidates:
            if self._try_claim(index):
                self.index = index
                return self
        if self._wanted is not None:
            raise BenchError(f"Redis db {self._wanted} is in use (not empty, or claimed by a test session)")
        raise BenchError("no empty, unclaimed Redis database among 1-15")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.index < 0:
            return
        client = redis.Redis.from_url(self.url)
        try:
            if client.get(LOCK_KEY) == self._token.encode():
                client.flushdb()
        finally:
            client.close()

    def flush(self) -> None:
        """Empty the database, keeping the claim; BenchError if the claim was lost."""
        client = redis.Redis.from_url(self.url)
        try:
            if client.get(LOCK_KEY) != self._token.encode():
                raise BenchError(f"lost the claim on Redis db {self.index}; not flushing it")
            with client.pipeline(transaction=True) as pipe:
                pipe.flushdb()
                pipe.set(LOCK_KEY, self._token, ex=_LOCK_TTL_S)
                pipe.execute()
        finally:
            client.close()

    def _try_claim(self, index: int) -> bool:
        client = redis.Redis.from_url(with_redis_db(self._server_url, index))
        try:
            # Someone's data without a lock (a crashed run, a developer) is left alone too.
            if client.dbsize() != 0:
                return False
            return bool(client.set(LOCK_KEY, self._token, nx=True, ex=_LOCK_TTL_S))
        finally:
            client.close()
