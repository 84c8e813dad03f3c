"""The queue engine: every job transition as one call to an atomic Lua script.

Both the API and the workers use this class; it knows Redis and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis


from . import scripts
from .connection import out_of_memory  # noqa: F401 (callers find it beside the queue)
from .jobs import Claimed, JobRecord
from .keys import Keys

IDEMPOTENCY_TTL_SECONDS = 24 * 3600


class QueueFull(Exception):
    """The user already has QUEUE_MAX_PENDING jobs waiting."""

    def __init__(self, index: int):
        super().__init__(f"queue full at item {index}")
        self.index = index


class NotQueued(Exception):
    """Only a QUEUED job can be cancelled."""

    def __init__(self, status: str):
        super().__init__(f"job is {status}")
        self.status = status


@dataclass(slots=True)
class Enqueued:
    job_id: str
    created: bool  # False when an idempotency key matched an earlier job
    created_ms: int


@dataclass(slots=True)
class Stats:
    queued: int
    processing: int
    ready: int


@dataclass(slots=True)
class Batch:
    """What a claim or a finish brought back."""

    jobs: list[Claimed]
    next_due_ms: int  # until a retry falls due on that shard; -1: none
    verdict: str | None = None


@dataclass(slots=True)
class RetryPolicy:
    max_attempts: int = 3
    retry_base_seconds: float = 1.0


@dataclass(slots=True)
class Bounds:
    """What Redis keeps of finished jobs, so one user's memory there is bounded
    by the settings (CONTRACT §10; docs/operations.md, "Redis memory per user").
    The scripts take these as one group of arguments (`bounds_at` in lua/_lib.lua)."""

    events_keep: int = 1000  # events in a user's own stream (payloads: for replay)
    max_ready: int = 10_000  # finished jobs of a user waiting for dequeue
    finished_retention_seconds: int = 3600  # after a job leaves `ready` and is archived
    shard_events_keep: int = 10_000  # entries of the shard-wide stream the API tails
    event_inline_bytes: int = 1024  # larger job bodies stay out of the shard stream

    def args(self) -> list[int]:
        return [self.events_keep, self.max_ready, self.finished_retention_seconds,
                self.shard_events_keep, self.event_inline_bytes]


def _batch(reply: list, verdict: str | None = None) -> Batch:
    return Batch(
        jobs=[Claimed(u, j, d, int(a), t) for u, j, d, a, t in reply[1:]],
        next_due_ms=int(reply[0]),
        verdict=verdict,
    )


class Queue:
    @classmethod
    def from_settings(cls, redis: Redis, settings) -> "Queue":
        """The queue as the settings describe it; the API and workers both use this."""
        policy = RetryPolicy(
            max_attempts=settings.queue_max_attempts,
            retry_base_seconds=settings.queue_retry_base_seconds,
        )
        bounds = Bounds(
            events_keep=settings.queue_events_keep,
            max_ready=settings.queue_max_ready,
            finished_retention_seconds=settings.queue_finished_retention_seconds,
            shard_events_keep=settings.queue_shard_events_keep,
            event_inline_bytes=settings.queue_event_inline_bytes,
        )
        return cls(redis, Keys(settings.queue_prefix, settings.queue_shards), policy, bounds)

    def __init__(self, redis: Redis, keys: Keys, policy: RetryPolicy | None = None,
                 bounds: Bounds | None = None):
        self.redis = redis
        self.keys = keys
        self.policy = policy or RetryPolicy()
        self.bounds = bounds or Bounds()
        self._scripts = scripts.register(redis)

    async def _run(self, name: str, base: str, *args):
        return await self._scripts[name](keys=[base], args=list(args))

    # ---- producer side (the API) ----

    async def enqueue(
        self, uid: str, items: list[tuple[str, str, str | None]], max_pending: int
    ) -> list[Enqueued]:
        """Store (job_id, data, idempotency_key) items in order, all or none."""
        args: list = [uid, max_pending, IDEMPOTENCY_TTL_SECONDS]
        for jid, data, key in items:
            args += [jid, data, key or ""]
        reply = await self._run("enqueue", self.keys.user_base(uid), *args)
        if reply[0] == "full":
            raise QueueFull(int(reply[1]))
        t = int(reply[1])
        pairs = reply[2:]
        return [Enqueued(pairs[i], pairs[i + 1] == 1, t) for i in range(0, len(pairs), 2)]

    async def get(self, uid: str, jid: str) -> JobRecord | None:
        """The live record of one of the user's jobs, None if Redis has none."""
        fields = await self.redis.hgetall(Keys.job(self.keys.user_base(uid), jid))
        if not fields or fields.get("uid") != uid:
            return None
        return JobRecord.from_fields(fields, jid)

    async def get_many(self, uid: str, jids: list[str]) -> dict[str, JobRecord]:
        base = self.keys.user_base(uid)
        async with self.redis.pipeline(transaction=False) as pipe:
            for jid in jids:
                pipe.hgetall(Keys.job(base, jid))
            rows = await pipe.execute()
        return {
            jid: JobRecord.from_fields(f, jid) for jid, f in zip(jids, rows)
            if f and f.get("uid") == uid
        }

    async def cancel(self, uid: str, jid: str) -> JobRecord | None:
        reply = await self._run("cancel", self.keys.user_base(uid), uid, jid)
        if reply[0] == "missing":
            return None
        if reply[0] == "conflict":
            raise NotQueued(reply[1])
        return JobRecord.from_json(reply[1])

    async def dequeue(self, uid: str) -> JobRecord | None:
        body = await self._run("dequeue", self.keys.user_base(uid), uid)
        return JobRecord.from_json(body) if body else None

    async def stats(self, uid: str) -> Stats:
        base = self.keys.user_base(uid)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(Keys.user(base, uid, "pending"))
            pipe.get(Keys.user(base, uid, "state"))
            pipe.llen(Keys.user(base, uid, "ready"))
            pending, state, ready = await pipe.execute()
        return Stats(queued=pending, processing=1 if state == "a" else 0, ready=ready)

    # ---- consumer side (the workers) ----

    async def claim(self, base: str, n: int, owner: str, lease_seconds: float) -> Batch:
        reply = await self._run("claim", base, n, owner, int(lease_seconds * 1000))
        return _batch(reply)

    async def finish(
        self,
        job: Claimed,
        ok: bool,
        value: str,
        *,
        claim_n: int,
        owner: str,
        lease_seconds: float,
    ) -> Batch:
        """Record an attempt's outcome and claim up to claim_n more jobs."""
        reply = await self._run("finish", self.keys.user_base(job.user_id),
                                *self._finish_args(job, ok, value, claim_n, owner, lease_seconds))
        return _batch(reply[1:], verdict=reply[0])

    def _finish_args(self, job: Claimed, ok: bool, value: str, claim_n: int, owner: str,
                     lease_seconds: float) -> list:
        p = self.policy
        return [job.user_id, job.job_id, job.token, "ok" if ok else "error", value,
                p.max_attempts, int(p.retry_base_seconds * 1000),
                claim_n, owner, int(lease_seconds * 1000), *self.bounds.args()]

    async def heartbeat(self, jobs: list[Claimed], lease_seconds: float) -> list[str]:
        """Extend leases; returns the members (uid:jid) whose lease was lost."""
        by_base: dict[str, list] = {}
        for job in jobs:
            by_base.setdefault(self.keys.user_base(job.user_id), []).extend(
                [job.member, job.token]
            )
        lost: list[str] = []
        for base, pairs in by_base.items():
            lost += await self._run("heartbeat", base, int(lease_seconds * 1000), *pairs)
        return lost

    async def reclaim(self, base: str) -> int:
        """Fail or retry the jobs of dead workers whose lease expired."""
        p = self.policy
        return await self._run("reclaim", base, p.max_attempts,
                               int(p.retry_base_seconds * 1000), *self.bounds.args())

    async def release(self, job: Claimed) -> bool:
        """Hand a running job back at shutdown, its attempt not counted."""
        base = self.keys.user_base(job.user_id)
        return bool(await self._run("release", base, job.user_id, job.job_id, job.token))

    async def is_idle(self) -> bool:
        """No job waits, waits for a retry, or runs, for any user."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for base in self.keys.all_bases():
                pipe.llen(Keys.shard(base, "rot"))
                pipe.zcard(Keys.shard(base, "delayed"))
                pipe.zcard(Keys.shard(base, "leases"))
            counts = await pipe.execute()
        return not any(counts)

    # ---- the archiver (the API) ----

    async def archive_batch(self, base: str, limit: int = 200) -> list[JobRecord]:
        """Jobs with changes MongoDB has not seen yet, oldest first."""
        members = await self.redis.lrange(Keys.shard(base, "archive"), 0, limit - 1)
        jids = list(dict.fromkeys(m.split(":", 1)[1] for m in members))
        async with self.redis.pipeline(transaction=False) as pipe:
            for jid in jids:
                pipe.hgetall(Keys.job(base, jid))
            rows = await pipe.execute()
        found = [JobRecord.from_fields(f, jid) for jid, f in zip(jids, rows) if f]
        gone = set(jids) - {r.id for r in found}
        for m in members:  # records that expired before they were archived
            if m.split(":", 1)[1] in gone:
                await self.redis.lrem(Keys.shard(base, "archive"), 1, m)
        return found

    async def mark_archived(
        self, base: str, jobs: list[JobRecord], result_ttl: int, finished_retention: int
    ) -> None:
        """These versions are in MongoDB now: one script call for the batch."""
        args: list = [result_ttl, finished_retention]
        for job in jobs:
            args += [job.user_id, job.id, job.version]
        await self._run("archived", base, *args)

    # ---- events ----

    async def event_bodies(self, events: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The job JSON of (uid, cursor) events, from the users' own streams in
        one round trip; events those streams no longer hold are left out."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid, cursor in events:
                stream = Keys.user(self.keys.user_base(uid), uid, "events")
                pipe.xrange(stream, min=cursor, max=cursor, count=1)
            rows = await pipe.execute()
        return {event: row[0][1]["j"] for event, row in zip(events, rows) if row}

    async def events_after(self, uid: str, after: str, count: int = 1000):
        """Retained events of a user after a cursor: [(cursor, JobRecord)]."""
        stream = Keys.user(self.keys.user_base(uid), uid, "events")
        rows = await self.redis.xrange(stream, min=f"({after}", count=count)
        return [(cid, JobRecord.from_json(f["j"])) for cid, f in rows]
