"""Copies finished, cancelled and dequeued jobs from Redis into MongoDB.

Workers touch Redis only; each change they make that the history must keep
is listed on the shard's `archive` list. This task upserts those records by
job id with a version guard (an older snapshot never overwrites a newer one),
then marks them archived: archived.lua drops a job's entries only while the
version stored is still the job's current one. So several API processes
(`python -m graph --processes N`, or N machines) archive side by side: two
that read the same batch write the same versions twice at worst, and neither
drops the entry of a change that came after its read. Once a record is safely
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
# job hashes read per round trip: parsing 200 replies in one stretch held the
# requests in flight for milliseconds (the API's p99); the reads yield in between
READ_SLICE = 25
LINGER_SECONDS = 0.05  # after a pass, let finishes gather: one batch, not one pass per event
# entries of a shard's archive list a page of one user's jobs reads itself (flush_user);
# a longer list means the archiver is behind, and the page waits for a pass instead
USER_FLUSH_LIMIT = 2000


class Archiver:
    def __init__(self, queue: Queue, result_ttl: int, finished_retention: int):
        self.queue = queue
        self.result_ttl = result_ttl
        self.finished_retention = finished_retention
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one pass at a time in this process
        self._passes_started = 0
        self._passes_done = 0  # the newest pass that has finished
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
        """Archive what is listed now. Flushes that wait together share one pass:
        any pass that starts after this call reads everything listed before it."""
        wanted = self._passes_started + 1
        async with self._lock:
            if self._passes_done >= wanted:
                return
            await self.run_once()

    async def flush_user(self, uid: str) -> None:
        """Store what is listed for one user now: all that a page of that user's
        jobs needs from the archive, without waiting for a pass (a page used to
        wait for the running pass to end, then for one of its own, about eight
        round trips). It reads the shard's list and the user's records, and
        stores them; the entries stay listed for the next pass, which stores the
        same versions again (a no-op under the version guard) and drops them.
        Entries gone from the list were stored by a pass already (archived.lua
        drops them only once MongoDB holds the current version)."""
        records = await self.queue.listed_for(uid, USER_FLUSH_LIMIT)
        if records is None:
            await self.flush()
        elif records:
            await save_job_snapshots(records)

    async def run_once(self) -> int:
        """One pass over the shards: the entries listed when it starts, not those
        that arrive meanwhile. Under steady load a pass that chased the list's
        tail would never end, and `jobs` (which flushes before it reads) would
        wait for it. Returns the job records stored."""
        self._passes_started += 1
        number = self._passes_started
        try:
            return await self._archive_listed()
        finally:
            self._passes_done = max(self._passes_done, number)

    async def _archive_listed(self) -> int:
        # New entries go to a list's tail, so reading `listed` entries from each
        # shard's head reads all that were there (the total bounds each shard's).
        # An entry left behind because its job changed meanwhile (archived.lua)
        # is read by the next pass, which that change's event starts; its job's
        # record is in MongoDB already, one version behind until then.
        listed = (await self.queue.shape()).archive_backlog
        done = 0
        for base in self.queue.keys.all_bases():
            left = listed
            while left > 0:
                batch = await self.queue.archive_batch(base, min(BATCH, left), READ_SLICE)
                if not batch:
                    break
                left -= min(BATCH, left)
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
