"""A worker's wait for work: BLPOPs on the shards' signal lists.

An enqueue, a finish that frees a user, or a retry falling due pushes a token
on its shard's signal list (engine/lua: `signal`); an idle worker blocks on
those lists instead of polling.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from engine import connection
from engine.queue import Queue

log = logging.getLogger("workers")


class Signals:
    """Waits on the shards' signal lists with BLPOPs that are never cancelled.

    redis-py closes a connection whose command was cancelled (and its cluster
    client may even hand a half-open one back to its pool), so cancelling a
    BLPOP at every wake-up would cost a reconnect each time. Instead each
    BLPOP runs out its short timeout: one still in flight when the worker
    wakes serves its next wait, and one that pops a token while the worker is
    not waiting (`park`: every slot busy, or stopping) pushes the token back
    for an idle worker. On a single Redis one BLPOP watches every shard; on a
    Cluster a BLPOP's keys must share a slot, so there is one per shard.
    """

    BLOCK_SECONDS = 2

    def __init__(self, queue: Queue, redis: Redis, one_per_key: bool):
        self.queue = queue
        self.redis = redis
        keys = queue.signal_keys()
        self.groups = [(k,) for k in keys] if one_per_key else [tuple(keys)]
        self._tasks: dict[tuple, asyncio.Task] = {}
        self._parked = True

    async def _pop(self, keys: tuple) -> bool:
        got = await self.queue.wait_signal(list(keys), self.BLOCK_SECONDS, client=self.redis)
        if got and self._parked:
            # not ours to use: leave it to an idle worker
            await self.queue.return_signal(got, client=self.redis)
            return False
        return got is not None

    async def wait(self, timeout: float) -> bool:
        """Until a shard signals (True) or `timeout` passes (False)."""
        self._parked = False
        deadline = time.monotonic() + timeout
        while True:
            for key in self.groups:
                if key not in self._tasks:
                    self._tasks[key] = asyncio.create_task(self._pop(key))
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.wait(
                self._tasks.values(), timeout=left, return_when=asyncio.FIRST_COMPLETED)
            woke = False
            for key, task in list(self._tasks.items()):
                if not task.done():
                    continue
                del self._tasks[key]
                try:
                    woke = task.result() or woke
                except connection.TRANSIENT_ERRORS:
                    raise  # the dispatcher backs off and retries
                except Exception as exc:  # e.g. a redis-py cluster race: claim, then wait again
                    log.warning("waiting on %s failed: %r", key, exc)
                    await asyncio.sleep(0.1)
                    woke = True
            if woke:
                return True

    def park(self) -> None:
        self._parked = True

    async def close(self) -> None:
        """At exit: the connections go with the client, so cancelling is fine now."""
        self._parked = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
