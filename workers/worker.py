"""One worker process: claims jobs fairly, runs the handler, records outcomes.

How the loop goes:
- the dispatcher claims as many jobs as it has free slots, from the front of
  each shard's rotation of users, and starts a slot task for each;
- a slot runs its job, then hands the outcome to the group commit
  (workers/commit.py): the outcomes ready in the same event-loop iteration
  are recorded, and the slots' next jobs claimed, in one Redis call per shard
  (`finish_many.lua`), so a busy worker costs one round trip per batch, and
  a lone job's outcome is still sent at once;
- with nothing to claim, the dispatcher blocks on the shards' signal lists
  (BLPOP, see workers/signals.py) until an enqueue, a finish or a retry falls due: no
  polling;
- a maintenance task pushes the leases of running jobs forward, reclaims
  the expired leases of dead workers, and now and then recounts the shards'
  counters and backlog sets (the operators' figures), logging any it corrects.

What happens to an in-flight job:
- handler error or timeout: the attempt fails; retried with back-off up to
  QUEUE_MAX_ATTEMPTS, then FAILED. Any exception counts, SystemExit and
  KeyboardInterrupt included, and so does a result Redis cannot store (not a
  str, or not valid UTF-8): a handler fails its own job, never the worker;
- SIGTERM: no new job is taken, running ones get QUEUE_SHUTDOWN_GRACE_SECONDS
  to finish, the rest are handed back (`release.lua`: head of the user's
  queue, attempt not counted) and the process exits 0;
- Redis unreachable: finishing is retried until the lease would have run out;
  after that the outcome is dropped and the job runs again elsewhere (per
  job: the others of its batch are sent on);
- SIGTERM while an outcome is on its way to Redis: the grace period waits
  for its batch's call; one cut off at the end of the grace may not have
  reached Redis: that outcome is lost, its lease expires and the job runs
  again (the attempt counts);
- the process dies (kill -9): its leases expire and another worker reclaims
  the jobs (the attempt counts).
A sync handler that times out keeps running in its thread until it returns;
its result is discarded (threads cannot be killed). Such a hung thread costs
the worker a slot, never another job's attempt (`runners.HandlerThreads`);
once hung threads fill the pool the worker stops as at SIGTERM and exits 75
for its supervisor to restart it (`Worker._threads_changed`). With
QUEUE_ISOLATION=process the handler's child process is killed at the timeout
instead, and a child that dies fails only its own job (`runners.HandlerProcesses`).

Logs name a failed attempt's job and the kind of error, never the error's
text: that may hold request data, and goes in the job's `error` only.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Callable

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from engine import connection
from engine.jobs import Claimed
from engine.logs import log_context
from engine.queue import Batch, Queue

from . import metrics
from .commit import GroupCommit
from .context import AsyncJobContext, JobContext, Progress, takes_job
from .deadlines import Deadlines
from .outcomes import Outcome, check_result, failure
from .runners import HandlerProcesses, HandlerThreads, HandlerTimeout
from .signals import Signals

log = logging.getLogger("workers")

EXIT_HUNG_HANDLERS = 75  # EX_TEMPFAIL: every handler thread is hung; a restart frees them


@dataclass
class WorkerConfig:
    concurrency: int = 10
    lease_seconds: float = 30.0
    job_timeout_seconds: float = 30.0
    shutdown_grace_seconds: float = 20.0
    burst: bool = False
    recount_seconds: float = 60.0


class Worker:
    def __init__(
        self,
        queue: Queue,
        handler: Callable,
        config: WorkerConfig,
        blocking_redis: Redis | None = None,
        runner: HandlerThreads | HandlerProcesses | None = None,
    ):
        self.queue = queue
        self.handler = handler
        self.config = config
        self.owner = uuid.uuid4().hex[:12]
        # BLPOP holds a connection while it waits: give it its own client
        self.blocking_redis = blocking_redis or queue.redis
        self._signals = Signals(
            queue, self.blocking_redis,
            one_per_key=isinstance(self.blocking_redis, RedisCluster))
        self._is_async = inspect.iscoroutinefunction(handler)
        self._takes_job = takes_job(handler)  # a second parameter: the job context
        # where a sync handler runs (workers/runners.py): threads unless told otherwise
        self._runner = runner or HandlerThreads(config.concurrency)
        self._runner.on_change = self._threads_changed
        self._deadlines = Deadlines(config.job_timeout_seconds)  # async handlers' timeout
        self._running: dict[asyncio.Task, Claimed | None] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._due_at = float("inf")  # monotonic time the next retry falls due
        self._shard = 0
        self._bases = queue.keys.all_bases()  # the shards' base keys, visited in turn
        self._spread = len(self._bases) > 1
        self._commits = GroupCommit(queue, self.owner, config.lease_seconds,
                                    self._next_claims, self._note_due, self._adopt,
                                    slots=config.concurrency)
        self.exit_code = 0  # EXIT_HUNG_HANDLERS when hung threads stopped the worker

    @property
    def completed(self) -> int:
        """Jobs this worker brought to COMPLETED or FAILED."""
        return self._commits.completed

    # ---- lifecycle ----

    def stop(self) -> None:
        """Stop taking work; running jobs finish within the grace period."""
        if not self._stopping.is_set():
            log.info("stopping: no new jobs; %d running", len(self._running))
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        log.info(
            "worker %s started: concurrency %d, %d shard(s)",
            self.owner, self.config.concurrency, self.queue.keys.shards,
        )
        for redis in {id(r): r for r in (self.queue.redis, self.blocking_redis)}.values():
            await connection.ready(redis)  # a cluster's slots, before concurrent calls
        maintenance = asyncio.create_task(self._maintain())
        try:
            await self._dispatch()
        finally:
            await self._drain()
            await self._signals.close()
            maintenance.cancel()
            await asyncio.gather(maintenance, return_exceptions=True)
            self._runner.shutdown()
            log.info("worker %s stopped after %d jobs", self.owner, self.completed)

    # ---- the dispatcher ----

    async def _dispatch(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                free = self._capacity() - len(self._running)
                if free <= 0:
                    await self._wait(None)
                    continue
                if await self._claim(free):
                    backoff = 0.1
                    continue
                if self.config.burst and not self._running and await self.queue.is_idle():
                    log.info("burst: no job waiting or running; exiting")
                    return
                await self._wait(self._block_timeout())
                backoff = 0.1
            except connection.TRANSIENT_ERRORS as exc:
                log.warning("redis unreachable (%s); retrying in %.1fs", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _claim(self, free: int) -> bool:
        """Claim up to `free` jobs, visiting shards in turn."""
        bases = self._bases
        claimed = False
        for i in range(len(bases)):
            if free <= 0:
                break
            base = bases[(self._shard + i) % len(bases)]
            batch = await self.queue.claim(base, free, self.owner, self.config.lease_seconds)
            self._note_due(batch)
            for job in batch.jobs:
                self._start(job)
            free -= len(batch.jobs)
            claimed = claimed or bool(batch.jobs)
        self._shard = (self._shard + 1) % len(bases)
        return claimed

    async def _claim_next(self) -> Claimed | None:
        """One job for a slot that just finished, from the next shard with work."""
        bases = self._bases
        try:
            for _ in range(len(bases)):
                base = bases[self._shard]
                self._shard = (self._shard + 1) % len(bases)
                batch = await self.queue.claim(base, 1, self.owner, self.config.lease_seconds)
                if batch.jobs:
                    return batch.jobs[0]
        except RedisError as exc:  # the dispatcher claims once Redis is back
            log.warning("claim after finish failed: %s", exc)
        return None

    def _next_claims(self, n: int) -> dict[str, int]:
        """Where the next jobs of n slots that just finished come from: shard
        by shard in turn, as _claim_next visits them (a slot must not keep
        serving its own shard while users of others wait)."""
        bases = self._bases
        if len(bases) == 1:
            return {bases[0]: n}
        plan: dict[str, int] = {}
        for _ in range(n):
            base = bases[self._shard]
            plan[base] = plan.get(base, 0) + 1
            self._shard = (self._shard + 1) % len(bases)
        return plan

    def _block_timeout(self) -> float:
        """Block at most until a retry falls due or maintenance is due."""
        until_due = self._due_at - time.monotonic()
        return max(0.01, min(until_due, self._maintenance_interval()))

    async def _wait(self, timeout: float | None) -> None:
        """Until a signal from Redis (when timeout is set), a freed slot, or stop."""
        self._wake.clear()
        waiters = [asyncio.create_task(self._wake.wait())]
        if timeout is not None:
            waiters.append(asyncio.create_task(self._signals.wait(timeout)))
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # surface a Redis error to the dispatcher
        finally:
            self._signals.park()
            for task in waiters:
                task.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _note_due(self, batch: Batch) -> None:
        if batch.next_due_ms >= 0:
            self._due_at = time.monotonic() + batch.next_due_ms / 1000
        else:
            self._due_at = float("inf")

    # ---- slots ----

    def _start(self, job: Claimed) -> None:
        task = asyncio.create_task(self._slot(job))
        self._running[task] = job
        task.add_done_callback(self._slot_done)

    def _slot_done(self, task: asyncio.Task) -> None:
        job = self._running.pop(task, None)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()):
            # a bug of ours: where it happened, not the message (it may hold request data)
            log.error("slot crashed on job %s: %s\n%s", job.job_id if job else "-",
                      type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))

    async def _slot(self, job: Claimed) -> None:
        """Run jobs one after another: each finish claims this slot's next job
        (in its batch's call: workers/commit.py)."""
        task = asyncio.current_task()
        while job is not None:
            self._running[task] = job
            outcome = await self._execute(job)
            self._running[task] = None  # the outcome is being recorded: nothing to hand back
            go_on = self._may_go_on()
            verdict, job = await self._commits.finish(job, outcome, go_on)
            if job is None and go_on and verdict is not None and self._spread:
                # its turn's shard had no work: the next shards in turn
                job = await self._claim_next()

    async def _adopt(self, job: Claimed) -> None:
        """A job claimed for a slot that no longer takes it (its own outcome
        was dropped, or it was cancelled at shutdown): a slot of its own, or
        handed back when stopping."""
        if not self._stopping.is_set():
            self._start(job)
            return
        try:
            await self.queue.release(job)
        except RedisError as exc:
            log.error("could not hand back job %s (%s); its lease will expire",
                      job.job_id, exc)

    def _capacity(self) -> int:
        """Jobs this worker may run at once: one per thread that is not hung."""
        return self.config.concurrency - self._runner.hung

    def _may_go_on(self) -> bool:
        """May a slot that has just run a job take another? Not once hung
        threads have taken its place (it counts itself in `_running`)."""
        return not self._stopping.is_set() and len(self._running) <= self._capacity()

    def _threads_changed(self) -> None:
        """A handler thread hung or came back. With every thread hung this worker
        can run nothing, and may never again: it stops as at SIGTERM (what it
        holds is finished or handed back) and exits EXIT_HUNG_HANDLERS, for its
        supervisor to start a fresh process. Stopping claims while hung threads
        fill the pool would keep it alive but useless, perhaps for good."""
        if self._capacity() <= 0 and not self._stopping.is_set():
            log.error("all %d handler threads are hung past the job timeout; stopping, "
                      "to be restarted", self.config.concurrency)
            self.exit_code = EXIT_HUNG_HANDLERS
            self.stop()
        self._wake.set()

    async def _execute(self, job: Claimed) -> Outcome:
        """Run the handler once; its log lines (and ours) carry the job's ids."""
        token = log_context.set({"job_id": job.job_id, "user_id": job.user_id})
        metrics.STARTED.inc()
        try:
            outcome = await self._attempt(job)
            if not outcome.ok:  # the kind only: the error's text may hold request data
                log.info("attempt %d of job %s failed: %s", job.attempts, job.job_id,
                         outcome.kind)
            return outcome
        finally:
            log_context.reset(token)

    async def _attempt(self, job: Claimed) -> Outcome:
        """The handler's failure of any kind is the job's, not the worker's: only
        the worker's own cancellation (shutdown) passes through. A handler that
        takes the job context gets one for this attempt; the report it still
        holds at the end goes with the outcome (workers/context.py). On
        shutdown's cancel nothing more is written: the job is handed back."""
        if not self._takes_job:
            return await self._outcome(job, None)
        progress = Progress(partial(self.queue.progress, job), asyncio.get_running_loop())
        try:
            outcome = await self._outcome(job, progress)
        except asyncio.CancelledError:
            progress.abandon()
            raise
        outcome.progress = await progress.close()
        return outcome

    async def _outcome(self, job: Claimed, progress: Progress | None) -> Outcome:
        started = time.perf_counter()
        try:
            return await self._call(job, progress)
        except HandlerTimeout:
            return Outcome(False, f"timed out after {self.config.job_timeout_seconds:g}s",
                           "timeout")
        except asyncio.CancelledError as exc:
            if asyncio.current_task().cancelling():
                raise  # ours: _drain hands the job back
            return failure(exc)  # the handler's own
        except BaseException as exc:  # SystemExit, KeyboardInterrupt... in user code too
            return failure(exc)
        finally:
            metrics.HANDLER_SECONDS.observe(time.perf_counter() - started)

    async def _call(self, job: Claimed, progress: Progress | None) -> Outcome:
        """The handler's outcome; HandlerTimeout once it has run for the job timeout."""
        if progress is None:
            return await self._run(self.handler, job.data)
        context = (AsyncJobContext if self._is_async else JobContext)(
            job.job_id, job.attempts, progress)
        handler = self.handler
        return await self._run(lambda data: handler(data, context), job.data)

    async def _run(self, handler: Callable, data: str) -> Outcome:
        timeout = self.config.job_timeout_seconds
        if not self._is_async:
            return await self._runner.call(handler, data, timeout)
        return check_result(await self._deadlines.run(handler(data)))

    # ---- maintenance: heartbeats and reclaiming dead workers' jobs ----

    def _maintenance_interval(self) -> float:
        return max(0.2, min(self.config.lease_seconds / 3, 5.0))

    async def _maintain(self) -> None:
        next_recount = time.monotonic() + self.config.recount_seconds
        while True:
            await asyncio.sleep(self._maintenance_interval())
            try:
                running = [j for j in self._running.values() if j is not None]
                if running:
                    lost = await self.queue.heartbeat(running, self.config.lease_seconds)
                    for member in lost:
                        log.warning("lease lost for %s; its outcome will be discarded", member)
                for base in self._bases:
                    reclaimed = await self.queue.reclaim(base)
                    if reclaimed:
                        metrics.RECLAIMED.inc(reclaimed)
                        log.warning("reclaimed %d job(s) from lost workers", reclaimed)
                        self._wake.set()
                if time.monotonic() >= next_recount:
                    next_recount = time.monotonic() + self.config.recount_seconds
                    await self.recount()
            except RedisError as exc:
                log.warning("maintenance skipped: %s", exc)

    async def recount(self) -> int:
        """Recount every shard's counters (recount.lua); how many were wrong.
        They never should be: a correction means something changed Redis
        behind the scripts' back (or a script forgot a counter), so it is logged."""
        fixed = 0
        for base in self._bases:
            wrong = await self.queue.recount(base)
            if wrong:
                log.warning("recount: corrected %d counter(s) of shard %s", wrong, base)
            fixed += wrong
        return fixed

    # ---- shutdown ----

    async def _drain(self) -> None:
        """Let running jobs finish within the grace period; hand back the rest.
        A slot whose outcome is on its way to Redis is waited for like the
        others (workers/commit.py says what a cancel at the end does)."""
        if not self._running:
            return
        tasks = list(self._running)
        _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace_seconds)
        unfinished = [self._running.get(t) for t in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for job in unfinished:
            if job is None:
                continue
            try:
                handed = await self.queue.release(job)
                log.info("handed back job %s%s", job.job_id,
                         "" if handed else " (lease already lost)")
            except RedisError as exc:
                log.error("could not hand back job %s (%s); its lease will expire",
                          job.job_id, exc)
