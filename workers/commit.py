"""Group commit: the outcomes a worker's slots have ready in the same event-loop
iteration go to Redis together, one `finish_many.lua` call per shard, which
records them and claims the slots' next jobs in the same round trip.

Why: at high concurrency a worker is CPU-bound, and most of a finish's cost
is paid per call (the EVALSHA round trip, encoding and parsing, the script's
clock, due-time promotion and wake-up checks), not per job. A batch pays it
once. Nothing waits for a batch to fill: the slot with the first outcome of
an iteration leads the batch: it yields once (`asyncio.sleep(0)`: the end of
the iteration, never a timer), so that the other slots ready in the same
iteration add theirs, then sends it itself (no task per batch) and hands each
slot its verdict and next job. A lone job's outcome goes out at once, in a
batch of one (with one slot there is nothing to wait for: no yield at all);
under load the slots that a batch's reply wakes all run in the next
iteration, and their outcomes form the next batch. A batch holds at most
half the worker's slots, so that Redis runs one batch while the worker
handles the other's jobs.

Every guarantee holds per job: the script checks each job's lease on its own
(a stale one records nothing and leaves the others alone) and records each
outcome as `finish.lua` does (one terminal state, retries, the progress report
that rides with it). The claims are taken from the rotation one a turn, as
that many single claims would be.

Redis unreachable: the call is retried, each job's outcome until its lease
would have run out; then that outcome is dropped (the lease expires, the job
runs again elsewhere, the attempt counts) and the others are sent on.
SIGTERM: the leading slot is a slot like the others, so the worker's grace
period waits for the batch it sends; cancelled at the end of the grace, the
call may or may not have reached Redis: an outcome not recorded is lost (the
lease expires, the job runs again, the attempt counts), and so is a job the
call claimed (its lease expires and it is reclaimed).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from engine import connection
from engine.jobs import Claimed
from engine.queue import Batch, Finish, Queue

from . import metrics
from .outcomes import Outcome

log = logging.getLogger("workers")

# What a slot gets back: its job's verdict (None: the outcome could not be
# recorded before the lease would run out) and its next job (None: none claimed).
Committed = tuple[str | None, Claimed | None]


@dataclass(slots=True, eq=False)
class _Pending:
    finish: Finish
    want_next: bool  # the slot takes a next job
    deadline: float  # monotonic: the lease could have run out by then
    future: asyncio.Future  # the slot's Committed, set by the batch's leader
    verdict: str | None = None


class GroupCommit:
    """Collects the slots' outcomes and sends them per loop iteration.

    `plan_claims(n)`: the shard bases n next jobs are to come from, and how
    many from each (the worker's turn over the shards). `note_due(batch)`:
    a reply's next due time. `adopt(job)`: a job claimed for a slot that no
    longer takes it (its outcome was dropped, or it was cancelled at shutdown).
    """

    def __init__(self, queue: Queue, owner: str, lease_seconds: float,
                 plan_claims: Callable[[int], dict[str, int]],
                 note_due: Callable[[Batch], None],
                 adopt: Callable[[Claimed], Awaitable[None]], *, slots: int):
        self.queue = queue
        self.owner = owner
        self.lease_seconds = lease_seconds
        self._plan_claims = plan_claims
        self._note_due = note_due
        self._adopt = adopt
        self._wait_for_others = slots > 1  # one slot: nobody else can join a batch
        # A batch holds at most half the slots' outcomes; the rest start a
        # second batch, sent right after it. With all of them in one call,
        # the worker waits while Redis runs the batch and Redis idles while
        # the worker runs the next jobs; with two, each runs one while the
        # other runs the other (bench/RESULTS.md, "Group commit (worker)").
        self._max_batch = max(1, -(-slots // 2))
        bases = queue.keys.all_bases()
        self._only_base = bases[0] if len(bases) == 1 else None
        self._forming: list[_Pending] | None = None  # the batch this iteration's outcomes join
        self.sizes: collections.Counter[int] = collections.Counter()  # outcomes per call sent
        self._finished: dict[str, object] = {}  # metrics.FINISHED's counter per verdict
        self.completed = 0  # jobs this worker brought to COMPLETED or FAILED

    async def finish(self, job: Claimed, outcome: Outcome, want_next: bool) -> Committed:
        """Record a slot's outcome with the others of this iteration; its verdict
        and the slot's next job."""
        loop = asyncio.get_running_loop()
        mine = _Pending(Finish(job, outcome.ok, outcome.value, outcome.progress), want_next,
                        time.monotonic() + self.lease_seconds, loop.create_future())
        if self._forming is not None and len(self._forming) < self._max_batch:
            # another slot leads this iteration's batch
            self._forming.append(mine)
            return await mine.future
        batch = self._forming = [mine]
        try:
            if self._wait_for_others:
                await asyncio.sleep(0)  # the slots ready in this iteration add theirs
            if self._forming is batch:  # (a full one has been replaced already)
                self._forming = None
            await self._commit(batch)
        except BaseException:  # cancelled (shutdown): the others stop waiting too
            if self._forming is batch:
                self._forming = None
            for p in batch:
                p.future.cancel()
            raise
        return mine.future.result()

    async def _commit(self, pending: list[_Pending]) -> None:
        """One call per shard touched; then each slot gets its verdict and a job."""
        wanted = [p for p in pending if p.want_next]
        plan = self._plan_claims(len(wanted)) if wanted else {}
        groups: dict[str, list[_Pending]] = {}
        if self._only_base is not None:
            groups[self._only_base] = pending
        else:
            for p in pending:
                groups.setdefault(self.queue.keys.user_base(p.finish.job.user_id), []).append(p)
            for base in plan:
                groups.setdefault(base, [])
        calls = [self._send(base, group, plan.get(base, 0)) for base, group in groups.items()]
        if len(calls) == 1:
            try:
                replies = [await calls[0]]
            except Exception as exc:
                replies = [exc]
        else:
            replies = await asyncio.gather(*calls, return_exceptions=True)
        claimed: list[Claimed] = []
        for group, reply in zip(groups.values(), replies):
            if isinstance(reply, BaseException):  # not Redis being away: a bug of ours
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(reply)  # the slot crashes, logged
            else:
                claimed += reply
        jobs = iter(claimed)
        for p in pending:
            if not p.future.done():  # done: cancelled at shutdown, or failed above
                job = next(jobs, None) if p.want_next and p.verdict is not None else None
                p.future.set_result((p.verdict, job))
        for job in jobs:  # claimed for slots that no longer take one (cancelled, dropped)
            await self._adopt(job)

    async def _send(self, base: str, group: list[_Pending], claim_n: int) -> list[Claimed]:
        """Record `group`'s outcomes and claim claim_n jobs on one shard; the jobs.
        Redis away: retried while a lease could still hold (a claim alone is not:
        the dispatcher claims once Redis is back)."""
        delay = 0.05
        while True:
            try:
                batch = await self.queue.finish_many(
                    base, [p.finish for p in group], claim_n=claim_n, owner=self.owner,
                    lease_seconds=self.lease_seconds)
                break
            except (RedisError, OSError) as exc:
                if not connection.is_transient(exc):
                    raise
                if not group:
                    log.warning("claim after finish failed: %s", exc)
                    return []
                now = time.monotonic()
                for p in group:
                    if now + delay > p.deadline:
                        log.error("could not record job %s (%s); its lease will expire "
                                  "and it will run again", p.finish.job.job_id, exc)
                group = [p for p in group if now + delay <= p.deadline]
                if not group:
                    return []
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.sizes[len(group)] += 1
        for p, verdict in zip(group, batch.verdicts):
            p.verdict = verdict
        self._count(group, batch.verdicts)
        self._note_due(batch)
        return batch.jobs

    def _count(self, group: list[_Pending], verdicts: list[str]) -> None:
        """Metrics per batch, a warning per stale job."""
        counts = {verdicts[0]: 1} if len(verdicts) == 1 else collections.Counter(verdicts)
        for verdict, n in counts.items():
            counter = self._finished.get(verdict)
            if counter is None:  # labels() takes a lock and builds a key: once per verdict
                counter = self._finished[verdict] = metrics.FINISHED.labels(verdict)
            counter.inc(n)
            if verdict in ("completed", "failed"):
                self.completed += n
            elif verdict == "stale":
                for p, v in zip(group, verdicts):
                    if v == "stale":
                        log.warning("job %s: lease was lost before it finished; "
                                    "outcome discarded", p.finish.job.job_id)
