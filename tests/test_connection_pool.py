"""The Redis connection pool: bounded, and a burst waits for a free connection
(rather than failing) for as long as the pool's timeout, no longer."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from engine import connection


async def _hold(redis, key: str, seconds: float):
    """A command that keeps its connection for `seconds`: BLPOP on an empty list."""
    return await redis.blpop([key], timeout=seconds)


async def test_a_burst_beyond_the_pool_waits_its_turn_and_every_call_succeeds(redis_url):
    redis = connection.client(redis_url, max_connections=2)
    try:
        await redis.delete("pool-test:burst")
        results = await asyncio.gather(*(
            _hold(redis, "pool-test:burst", 0.1) for _ in range(8)))
        assert results == [None] * 8, "every BLPOP ran out its timeout; none failed"
        assert len(redis.connection_pool._available_connections) <= 2
        assert await redis.ping()
    finally:
        await redis.aclose()


async def test_a_caller_waiting_longer_than_the_pool_timeout_gets_a_clear_error(redis_url):
    redis = connection.client(redis_url, max_connections=1)
    redis.connection_pool.timeout = 0.2
    try:
        holder = asyncio.create_task(_hold(redis, "pool-test:held", 2))
        await asyncio.sleep(0.05)  # the holder has the only connection
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await redis.ping()
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
    finally:
        await redis.aclose()


async def test_a_cancelled_waiter_passes_the_freed_connection_on(redis_url):
    redis = connection.client(redis_url, max_connections=1)
    try:
        holder = asyncio.create_task(_hold(redis, "pool-test:pass", 0.3))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(redis.ping())
        second = asyncio.create_task(redis.ping())
        await asyncio.sleep(0.05)
        gone.cancel()
        assert await asyncio.wait_for(second, 5) is True
        assert await holder is None
    finally:
        await redis.aclose()
