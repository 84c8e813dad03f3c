"""Copies finished, cancelled and dequeued jobs from Redis into MongoDB.

Workers touch Redis only; each change they make that the history must keep
is listed on the shard's `archive` list. This task upserts those records by
job id with a version guard (an older snapshot never overwrites a newer one),
so several API processes may archive side by side. Once a record is safely
in MongoDB, Redis is allowed to forget it after its retention time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from engine.loop import cancel_and_wait
from engine.queue import Queue

from .store import save_job_snapshots

log = logging.getLogger(__name__)

SWEEP_SECONDS = 2.0
BATCH = 200  # archive entries read at once
LINGER_SECONDS = 0.05  # after a pass, let finishes gather: one batch, not one pass per event


class Archiver:
    def __init__(self, queue: Queue, result_ttl: int, finished_retention: int):
        self.queue = queue
        self.result_ttl = result_ttl
        self.finished_retention = finished_retention
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None

    def wake(self, *_ignored) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            await cancel_and_wait(self._task)
        try:
            await self.run_once()  # what finished while we were stopping
        except Exception as exc:
            log.warning("final archive pass skipped: %s", exc)

    async def flush(self) -> None:
        """Archive what is listed now, sharing a pass already under way."""
        async with self._lock:
            await self.run_once()

    async def run_once(self) -> int:
        """One pass over the shards: what is listed when the pass starts, not what
        arrives meanwhile. Under steady load a pass that chased the list's tail
        would never end, and `jobs` (which flushes before it reads) would wait
        for it. Returns the job records stored."""
        listed = (await self.queue.shape()).archive_backlog
        if not listed:
            return 0
        # each batch drops the entries it stored (archived.lua); one left behind
        # (a newer change came meanwhile) is read again, hence the slack
        batches = -(-listed // BATCH) + 2
        done = 0
        for base in self.queue.keys.all_bases():
            for _ in range(batches):
                batch = await self.queue.archive_batch(base, BATCH)
                if not batch:
                    break
                await save_job_snapshots(batch)
                await self.queue.mark_archived(
                    base, batch, self.result_ttl, self.finished_retention)
                done += len(batch)
        return done

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("archiver: redis unavailable (%s); will retry", exc)
            except Exception:  # MongoDB down or refusing: records stay listed in Redis
                log.exception("archiver: could not store job records; will retry")
                await asyncio.sleep(SWEEP_SECONDS)
            else:
                await asyncio.sleep(LINGER_SECONDS)
