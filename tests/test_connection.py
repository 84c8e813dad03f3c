"""Our Redis client's pool and connections: bounded, a burst waits for a free
connection (rather than failing) for as long as the pool's timeout, no longer;
commands packed by hiredis store exactly what redis-py's packing would."""

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


async def test_commands_packed_by_hiredis_store_and_refuse_what_redis_py_would(redis_url):
    from redis.exceptions import DataError

    redis = connection.client(redis_url)
    try:
        held = await redis.connection_pool.get_connection()
        assert isinstance(held, connection.HiredisPacking)
        await redis.connection_pool.release(held)
        key = "pool-test:packed"
        await redis.delete(key)
        await redis.hset(key, mapping={"text": "é ü 🙂", "int": 7, "float": 0.1, "big": "x" * 200_000})
        assert await redis.hgetall(key) == {"text": "é ü 🙂", "int": "7", "float": "0.1",
                                            "big": "x" * 200_000}
        await redis.set(key + ":mv", memoryview(b"from a view"))  # hiredis refuses: redis-py packs
        assert await redis.get(key + ":mv") == "from a view"
        assert "maxmemory" in await redis.config_get("maxmemory")  # "CONFIG GET": two arguments
        with pytest.raises(DataError):
            await redis.set(key, True)
        assert await redis.ping()
    finally:
        await redis.aclose()


async def test_a_write_the_socket_cannot_take_at_once_still_goes_through(redis_url):
    """A command bigger than the socket's buffers waits for them to drain: the
    one write path where the socket timeout is armed."""
    redis = connection.client(redis_url)
    try:
        big = "x" * (32 * 1024 * 1024)
        await redis.set("pool-test:big", big)
        assert await redis.strlen("pool-test:big") == len(big)
        await redis.delete("pool-test:big")
    finally:
        await redis.aclose()


async def test_a_server_that_stops_reading_times_the_write_out():
    """A server that stalls on a big SET (it answers what comes before, then
    reads nothing more): the write fails after the socket timeout with
    redis-py's own error, as redis-py's write would."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    accepted = []

    async def answer_then_stall(reader, writer):
        accepted.append((reader, writer))  # the reader too: unreferenced, its data is dropped
        while True:
            data = await reader.read(65536)
            if not data or b"$3\r\nSET\r\n" in data:
                return  # stalled: the connection stays open, nothing more is read
            commands = data.count(b"\r\n*") + data.startswith(b"*")  # a reply each
            writer.write((b"+PONG\r\n" if b"PING" in data else b"+OK\r\n") * commands)

    server = await asyncio.start_server(answer_then_stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis = connection.client(f"redis://127.0.0.1:{port}/0", socket_timeout=0.5, protocol=2)
    try:
        await redis.ping()
        with pytest.raises(RedisTimeoutError, match="writing"):
            await redis.set("k", "x" * (64 * 1024 * 1024))
    finally:
        await redis.aclose()
        for _, writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
