"""One pipelined connection for Lua script calls, beside redis-py's pool.

Every state change is a script (EVALSHA), and a worker at concurrency 1, or
an API under load, makes one after another. Through redis-py each call takes
a pooled connection, runs its per-command hooks and retry wrapper, arms a
read timeout and reads the reply through a StreamReader: about 50 µs of CPU
a call on this machine, against 13 µs here, where calls are written to one
connection back to back and their replies matched in order (Redis answers a
connection's commands in the order they came), as ioredis does for BullMQ.

Only scripts come this way: they never block (a BLPOP would hold up every
call queued behind it; those keep redis-py's pool, as do pipelines).

What happens when things go wrong, on purpose:
- the connection is opened on first use by redis-py's own connection class,
  so the URL's TLS, socket path, credentials, database and client name hold
  as on every other connection; only the reading is done here;
- a reply later than `timeout` (the client's socket timeout) means the
  connection is stuck, since replies come in order: it is closed and every
  call on it fails with TimeoutError;
- the connection drops: every call on it fails with ConnectionError, and the
  next call opens a new one.
Neither is retried here: a script that was sent may have run, and only its
caller knows whether running it again is safe. The worker tries a job's
finish again, fenced by the job's lease (workers/worker.py says what happens
to the job); the API answers with an error.
- a caller cancelled while its call is out: the reply is read and dropped, and
  the connection stays in use (redis-py closes a connection whose command was
  cancelled).
"""

from __future__ import annotations

import asyncio
from collections import deque

import hiredis
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

_NOT_YET = object()  # hiredis: no whole reply in the buffer yet
_PUSH = getattr(hiredis, "PushNotification", ())  # RESP3 pushes answer no call


class ScriptLine:
    """Calls written in turn on one connection, each answered by its reply."""

    def __init__(self, pool, timeout: float):
        self.pool = pool  # redis-py's pool: its connection settings open ours
        self.timeout = timeout
        self._line: _Line | None = None
        self._opening: asyncio.Task | None = None

    async def call(self, *args):
        """Send one command; its reply, or the error Redis answered with."""
        line = self._line
        if (line is None or line.closed or line.loop is not asyncio.get_running_loop()
                or line.transport.is_closing()):
            line = await self._open()
        return await line.send(args)

    def close(self) -> None:
        """Close the connection; calls still out fail with ConnectionError."""
        if self._line is not None:
            self._line.abort(RedisConnectionError("the client was closed"))
            self._line = None

    async def _open(self) -> "_Line":
        loop = asyncio.get_running_loop()
        if self._line is not None and self._line.loop is not loop:
            # the client moved to another event loop (tests do): drop the old loop's line
            self._line.abort(RedisConnectionError("the event loop changed"))
            self._line = None
        opening = self._opening
        if opening is None or opening.get_loop() is not loop:
            opening = self._opening = loop.create_task(self._connect())
        try:
            self._line = await asyncio.shield(opening)
        finally:
            if self._opening is opening and opening.done():
                self._opening = None
        return self._line

    async def _connect(self) -> "_Line":
        conn = self.pool.make_connection()
        await conn.connect()  # redis-py's handshake: TLS, AUTH, HELLO, SELECT, SETNAME
        writer, conn._reader, conn._writer = conn._writer, None, None  # ours now, not redis-py's
        transport = writer.transport
        kwargs = {"protocolError": InvalidResponse, "replyError": BaseParser.parse_error,
                  "notEnoughData": _NOT_YET}
        if conn.encoder.decode_responses:
            kwargs.update(encoding=conn.encoder.encoding, errors=conn.encoder.encoding_errors)
        line = _Line(transport, hiredis.Reader(**kwargs), self.timeout)
        line.writer = writer  # a stream writer closes its transport when collected
        transport.set_protocol(line)
        return line


class _Line(asyncio.Protocol):
    """One open connection and the calls out on it, oldest first."""

    def __init__(self, transport: asyncio.Transport, reader: hiredis.Reader, timeout: float):
        self.transport = transport
        self.reader = reader
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.writer: asyncio.StreamWriter | None = None
        self._waiting: deque[tuple[asyncio.Future, float]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def send(self, args) -> asyncio.Future:
        waiter = self.loop.create_future()
        deadline = self.loop.time() + self.timeout
        self.transport.write(hiredis.pack_command(args))
        self._waiting.append((waiter, deadline))
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._check_late)
        return waiter

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as exc:
                self.abort(RedisConnectionError(f"Redis sent a reply we cannot read: {exc}"))
                return
            if reply is _NOT_YET:
                return
            if _PUSH and isinstance(reply, _PUSH):
                continue
            waiter, _ = self._waiting.popleft()
            if waiter.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(RedisConnectionError(
            f"connection to Redis lost{f' ({exc})' if exc else ''}; "
            "a script sent before may or may not have run"))

    def _check_late(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        _, deadline = self._waiting[0]
        if deadline <= self.loop.time():
            self.abort(RedisTimeoutError("Timeout reading from Redis"))
        else:
            self._timer = self.loop.call_at(deadline, self._check_late)

    def abort(self, error: Exception) -> None:
        self._fail_all(error)
        try:
            self.transport.abort()
        except RuntimeError:  # a line of an event loop that is closed: the socket went with it
            pass

    def _fail_all(self, error: Exception) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, deque()
        for waiter, _ in waiting:
            if not waiter.done():
                waiter.set_exception(error)
