"""Script calls on their own pipelined connection (engine/scriptline.py): each
caller gets its own reply, Redis's errors arrive as redis-py raises them, and
a dropped, stuck or abandoned call never hands one caller another's reply."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine import connection

ECHO = "return ARGV[1]"


async def test_concurrent_calls_each_get_their_own_reply_on_one_connection(redis_url):
    redis = connection.client(redis_url)
    try:
        echo = redis.register_script(ECHO)
        pool = redis.connection_pool
        replies = await asyncio.gather(*(echo(args=[f"call-{i}"]) for i in range(500)))
        assert replies == [f"call-{i}" for i in range(500)]
        assert not pool._in_use_connections, "no script call took a pooled connection"
    finally:
        await redis.aclose()


async def test_a_script_error_is_raised_as_redis_py_raises_it_and_the_line_goes_on(redis_url):
    redis = connection.client(redis_url)
    try:
        refuse = redis.register_script("return redis.error_reply('QUEUE_FULL no room')")
        with pytest.raises(ResponseError, match="QUEUE_FULL no room"):
            await refuse()
        assert await redis.register_script(ECHO)(args=["after"]) == "after"
    finally:
        await redis.aclose()


async def test_a_script_redis_has_forgotten_is_loaded_again(redis_url):
    redis = connection.client(redis_url)
    try:
        echo = redis.register_script(ECHO + " .. '!'")
        assert await echo(args=["before"]) == "before!"
        await redis.script_flush()
        assert await echo(args=["after the flush"]) == "after the flush!"
    finally:
        await redis.aclose()


async def test_script_calls_write_to_the_urls_database(redis_url):
    db_url = (redis_url + ("&" if "?" in redis_url else "?") + "db=5"
              if redis_url.startswith("unix") else redis_url.rsplit("/", 1)[0] + "/5")
    redis = connection.client(db_url)
    plain = connection.client(redis_url)
    try:
        await redis.register_script("return redis.call('SET', KEYS[1], 'in five')")(
            keys=["line-test:db"])
        assert await redis.get("line-test:db") == "in five"
        assert await plain.get("line-test:db") is None, "not in the URL's default database"
        await redis.delete("line-test:db")
    finally:
        await redis.aclose()
        await plain.aclose()


async def test_a_cancelled_caller_leaves_the_next_caller_its_own_reply(redis_url):
    redis = connection.client(redis_url)
    try:
        echo = redis.register_script(ECHO)
        await echo(args=["warm"])  # the line is open: the next call is on the wire at once
        abandoned = asyncio.create_task(echo(args=["abandoned"]))
        await asyncio.sleep(0)  # sent, not yet answered
        abandoned.cancel()
        assert await echo(args=["mine"]) == "mine"
        assert abandoned.cancelled()
    finally:
        await redis.aclose()


def test_a_client_used_from_a_second_event_loop_opens_a_new_line(redis_url):
    redis = connection.client(redis_url)
    echo = redis.register_script(ECHO)
    assert asyncio.run(echo(args=["first loop"])) == "first loop"
    assert asyncio.run(echo(args=["second loop"])) == "second loop"
    asyncio.run(redis.aclose())


class FakeRedis:
    """A server that says OK to every command (the handshake) and answers
    EVALSHA as told: "close" drops the connection, "stall" never answers,
    anything else is sent as the reply."""

    def __init__(self, evalsha_answers: list[str | bytes]):
        self.answers = evalsha_answers
        self.connections = 0
        self._writers = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        return self

    async def __aexit__(self, *exc):
        for writer in self._writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        self.connections += 1
        self._writers.append(writer)
        while data := await reader.read(65536):
            for command in data.split(b"\r\n*")[:]:
                if b"EVALSHA" not in command:
                    writer.write(b"+PONG\r\n" if b"PING" in command else b"+OK\r\n")
                    continue
                answer = self.answers.pop(0)
                if answer == "close":
                    writer.close()
                    return
                if answer != "stall":
                    writer.write(answer)


async def test_a_connection_dropped_mid_call_fails_that_call_and_the_next_reconnects():
    async with FakeRedis(["close", b":7\r\n"]) as fake:
        redis = connection.client(fake.url, protocol=2)
        try:
            with pytest.raises(RedisConnectionError, match="may or may not have run"):
                await redis.evalsha("0" * 40, 0)
            assert await redis.evalsha("0" * 40, 0) == 7
            assert fake.connections == 2
        finally:
            await redis.aclose()


async def test_a_reply_later_than_the_socket_timeout_fails_every_call_on_that_connection():
    async with FakeRedis(["stall", "stall", b":8\r\n"]) as fake:
        redis = connection.client(fake.url, protocol=2, socket_timeout=0.3)
        try:
            first = asyncio.create_task(redis.evalsha("0" * 40, 0))
            second = asyncio.create_task(redis.evalsha("0" * 40, 0))
            for call in (first, second):
                with pytest.raises(RedisTimeoutError):
                    await call
            assert await redis.evalsha("0" * 40, 0) == 8, "a new connection serves the next"
        finally:
            await redis.aclose()
