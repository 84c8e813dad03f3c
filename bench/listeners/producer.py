"""The events: queued jobs finished at a steady rate, the way workers finish them."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from engine.jobs import Claimed
from engine.queue import Queue
from engine.replies import decode

OWNER = "bench-listeners-producer"
LEASE = 120.0
IN_HAND = 64  # jobs the producer holds claimed, as workers with 64 slots in all would
TICK = 0.002  # the producer finishes what fell due every TICK seconds


@dataclass
class Production:
    """What the producer did in a window."""

    t0: float  # epoch seconds its schedule started
    t1: float
    events: int
    max_late_ms: float

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


async def fill(queue: Queue, uids: list[str], per_user: int) -> None:
    """Enqueue per_user jobs for each user, before the API starts listening."""
    sem = asyncio.Semaphore(16)

    async def one(uid):
        async with sem:
            await queue.enqueue(
                uid, [(uuid.uuid4().hex, "x" * 16, None) for _ in range(per_user)], 10**9)

    await asyncio.gather(*(one(u) for u in uids))


async def finish_batch(queue: Queue, jobs: list[Claimed], *, claim_n: int) -> list[Claimed]:
    """`queue.finish(job, True, "ok", claim_n=claim_n, ...)` for each job, in one round
    trip: a pipeline of the engine's `finish` script, each call still atomic on
    its own. Returns the jobs claimed in their place.

    The engine keeps no batch method for a benchmark alone, so this borrows
    the three parts of `Queue.finish` it needs (the registered script, its
    argument list, the engine's reading of the reply) rather than writing the
    script's protocol a second time here."""
    finish = queue._scripts["finish"]
    pipe = queue.redis.pipeline(transaction=False)
    for job in jobs:
        await finish(keys=[queue.keys.user_base(job.user_id)],
                     args=queue._finish_args(job, True, "ok", claim_n, OWNER, LEASE),
                     client=pipe)
    return [claimed for reply in await pipe.execute() for claimed in decode("finish", reply).jobs]


class Producer:
    """Finishes the queued jobs of one shard on a fixed schedule.

    Each tick finishes the jobs that have fallen due, in one pipeline (each
    `finish` script still claims the next job, as a worker's does), so the
    producer's own CPU stays small beside the API it shares the machine with.
    Open loop: a late tick finishes all that fell due meanwhile. `drain_key`,
    when given, is deleted after each batch (the shard's archive list).
    """

    def __init__(self, queue: Queue, base: str, drain_key: str | None):
        self.queue, self.base, self.drain_key = queue, base, drain_key

    async def run(self, rate: float, seconds: float) -> Production:
        """Finish `rate * seconds` jobs, `rate` a second."""
        total = int(rate * seconds)
        in_hand = (await self.queue.claim(self.base, IN_HAND, OWNER, LEASE)).jobs
        late = 0.0
        done = 0
        t0 = time.time() + 0.05
        while done < total:
            due = min(total, int((time.time() - t0) * rate) + 1)
            if due <= done:
                await asyncio.sleep(max(0.0, min(TICK, t0 + done / rate - time.time())))
                continue
            if not in_hand:
                raise RuntimeError("the queue ran dry: enqueue more jobs")
            late = max(late, time.time() - (t0 + done / rate))
            batch, in_hand = in_hand[:due - done], in_hand[due - done:]
            more = done + len(batch) + len(in_hand) < total  # claim replacements while jobs remain
            in_hand.extend(await finish_batch(self.queue, batch, claim_n=1 if more else 0))
            if self.drain_key:
                await self.queue.redis.delete(self.drain_key)
            done += len(batch)
        return Production(t0=t0, t1=time.time(), events=done, max_late_ms=late * 1000)
