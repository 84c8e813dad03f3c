"""The queue engine: every job transition as one call to an atomic Lua script.

Both the API and the workers use this class; it knows Redis and nothing else,
and nothing else knows Redis: the key names are in engine/keys.py, what the
scripts answer in engine/replies.py, and the reads the API's metrics, event
fan-out, throttles and the workers' wake-ups need are methods here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis


from . import library
from .connection import out_of_memory  # noqa: F401 (callers find it beside the queue)
from .jobs import Claimed, JobRecord, Update, UpdateKind
from .keys import Keys
from .replies import (  # noqa: F401 (callers' too)
    Batch, Enqueued, Limits, NotFinished, NotQueued, QueueFull, Retried, decode)
from .scripts import CONSTANTS

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
RATE_WINDOW_SECONDS = 120  # a minute's enqueue counter outlives its minute
PURGE_BATCH = 1000  # jobs one purge script cancels; purge() calls until none is left
BUCKET_SECONDS = CONSTANTS["BUCKET_MS"] // 1000  # the throughput history's resolution


def _split_member(member: str) -> tuple[str, str, str]:
    """(uid, ":", jid) of a leases or archive entry `uid:jid` (a job id has no colon)."""
    return member.rpartition(":")


@dataclass(slots=True)
class Stats:
    queued: int
    processing: int
    ready: int
    scheduled: int = 0  # the part of `queued` whose runAt is still ahead


@dataclass(slots=True)
class NewJob:
    """A job to enqueue. `run_at_ms` (unix ms) None: due now; a past one, too."""

    job_id: str
    data: str
    idempotency_key: str | None = None
    ordering_key: str | None = None  # None or "": the user's default lane
    priority: int = 0  # -100..100, higher first among a user's lanes
    run_at_ms: int | None = None

    def args(self) -> list:
        return [self.job_id, self.data, self.idempotency_key or "", self.ordering_key or "",
                self.priority or 0, "" if self.run_at_ms is None else int(self.run_at_ms)]


@dataclass(slots=True)
class Shape:
    """What the queue holds now, over all shards (for metrics and `is_idle`)."""

    in_rotation: int  # users with jobs waiting and nothing running
    delayed: int  # entries of the due-time index: jobs waiting for a runAt or a back-off, rate-limited users
    running: int  # jobs under a worker's lease
    archive_backlog: int  # job changes MongoDB has not stored yet

    @property
    def users_waiting(self) -> int:
        return self.in_rotation + self.delayed


@dataclass(slots=True)
class Totals:
    """The deployment's live counts, from the shards' counters (no key is scanned)."""

    queued: int  # QUEUED jobs, those waiting for a retry included
    processing: int
    scheduled: int  # QUEUED jobs whose runAt is still ahead
    users_waiting: int  # users with QUEUED jobs, less the paused and those waiting for a due time


@dataclass(slots=True)
class UserQueue:
    """One user's live queue, for the operators' table."""

    queued: int
    processing: int
    scheduled: int
    oldest_queued_ms: int | None  # created time of the user's oldest QUEUED job


@dataclass(slots=True)
class Point:
    """One 10 s bucket of the throughput history; `at` (unix s) starts it."""

    at: int
    enqueued: int = 0
    completed: int = 0
    failed: int = 0
    queued: int = 0  # QUEUED jobs at the bucket's end


@dataclass(slots=True)
class ShardEvent:
    """An entry of a shard's event stream: a job of `user_id` finished, or
    (with `kind`) a job's update that `processed` does not announce.

    A finish: `cursor` is the event's id in the user's own stream; `body` the
    job's JSON, or None when it was too large to copy into the shard's stream
    (QUEUE_EVENT_INLINE_BYTES): `Queue.event_bodies` reads those; `job_id` and
    `update` name its terminal update in the job's stream.
    An update (STARTED, PROGRESS, RETRYING, CANCELLED): `cursor` is its id in
    the job's stream (the body is read from there: `Queue.update_bodies`)."""

    entry_id: str
    user_id: str
    cursor: str
    body: str | None
    job_id: str | None = None
    kind: str | None = None  # set on updates only
    update: str | None = None  # a finish's terminal update, in the job's stream


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


@dataclass(slots=True)
class Finish:
    """An attempt's outcome for `Queue.finish_many`: ok with its result, or
    not with its error; `progress`, its last report not written yet."""

    job: Claimed
    ok: bool
    value: str
    progress: tuple[float, str | None] | None = None


def _report(progress: tuple[float, str | None] | None, padded: bool = False) -> list:
    """A progress report as the finish scripts take it: value, has_message,
    message; none is '' (padded: to the same 3 values, finish_many's stride)."""
    if progress is None:
        return ["", "0", ""] if padded else [""]
    value, message = progress
    return [repr(float(value)), "0" if message is None else "1", message or ""]


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
        return cls(redis, Keys(settings.queue_prefix, settings.queue_shards), policy, bounds,
                   user_concurrency=settings.queue_user_concurrency)

    def __init__(self, redis: Redis, keys: Keys, policy: RetryPolicy | None = None,
                 bounds: Bounds | None = None, *, user_concurrency: int = 1):
        self.redis = redis
        self.keys = keys
        self.policy = policy or RetryPolicy()
        self.bounds = bounds or Bounds()
        self.user_concurrency = user_concurrency  # a user's concurrency unless set (limits)
        self._scripts = library.register(redis, user_concurrency)

    async def _call(self, script: str, key: str, *args):
        """Run a script and read its reply (engine/replies.py). `key`, its KEYS[1],
        is a shard's base key; for `count`, the counter itself."""
        return decode(script, await self._scripts[script](keys=[key], args=list(args)))

    # ---- producer side (the API) ----

    async def enqueue(
        self, uid: str, items: list[NewJob | tuple[str, str, str | None]], max_pending: int
    ) -> list[Enqueued]:
        """Store items in order, all or none: NewJob, or (job_id, data,
        idempotency_key) for a job of the default lane, due now."""
        args: list = [uid, max_pending, IDEMPOTENCY_TTL_SECONDS]
        for item in items:
            args += (item if isinstance(item, NewJob) else NewJob(*item)).args()
        return await self._call("enqueue", self.keys.user_base(uid), *args)

    async def count_enqueues(self, uid: str, n: int) -> int:
        """Add n to the user's enqueues this minute; returns the minute's total."""
        key = self.keys.enqueue_rate(uid, int(time.time() // 60))
        return await self.count(key, RATE_WINDOW_SECONDS, by=n)

    async def get(self, uid: str, jid: str) -> JobRecord | None:
        """The live record of one of the user's jobs, None if Redis has none."""
        fields = await self.redis.hgetall(Keys.job(self.keys.user_base(uid), jid))
        if not fields or fields.get("uid") != uid:
            return None
        return JobRecord.from_fields(fields, jid)

    async def get_many(self, uid: str, jids: list[str]) -> dict[str, JobRecord]:
        return await self.get_owned({uid: jids})

    async def get_owned(self, wanted: dict[str, list[str]]) -> dict[str, JobRecord]:
        """Live records of several users' jobs, {uid: [jid]}, in one round trip:
        {jid: record}, only of the jobs Redis holds and that are that user's."""
        asked = [(uid, jid) for uid, jids in wanted.items() for jid in jids]
        if not asked:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid, jid in asked:
                pipe.hgetall(Keys.job(self.keys.user_base(uid), jid))
            rows = await pipe.execute()
        return {
            jid: JobRecord.from_fields(f, jid) for (uid, jid), f in zip(asked, rows)
            if f and f.get("uid") == uid
        }

    async def cancel(self, uid: str, jid: str) -> JobRecord | None:
        """The cancelled job; None if Redis has no such job of the user's."""
        return await self._call("cancel", self.keys.user_base(uid), uid, jid,
                                *self.bounds.args())

    async def dequeue(self, uid: str) -> JobRecord | None:
        return await self._call("dequeue", self.keys.user_base(uid), uid)

    async def stats(self, uid: str) -> Stats:
        base = self.keys.user_base(uid)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zscore(Keys.backlog(base), uid)  # its QUEUED jobs, kept by the scripts
            pipe.hlen(Keys.busy(base, uid))
            pipe.llen(Keys.ready(base, uid))
            pipe.scard(Keys.scheduled(base, uid))
            queued, running, ready, scheduled = await pipe.execute()
        return Stats(queued=int(queued or 0), processing=running, ready=ready,
                     scheduled=scheduled)

    # ---- consumer side (the workers) ----

    async def claim(self, base: str, n: int, owner: str, lease_seconds: float) -> Batch:
        return await self._call("claim", base, n, owner, int(lease_seconds * 1000))

    async def finish(
        self,
        job: Claimed,
        ok: bool,
        value: str,
        *,
        claim_n: int,
        owner: str,
        lease_seconds: float,
        progress: tuple[float, str | None] | None = None,
    ) -> Batch:
        """Record an attempt's outcome and claim up to claim_n more jobs.
        `progress`: the attempt's last progress report not written yet, recorded
        first in the same script (so a fast job's reports cost no extra call)."""
        return await self._call("finish", self.keys.user_base(job.user_id),
                                *self._finish_args(job, ok, value, claim_n, owner, lease_seconds,
                                                   progress))

    def _finish_args(self, job: Claimed, ok: bool, value: str, claim_n: int, owner: str,
                     lease_seconds: float, progress: tuple[float, str | None] | None = None
                     ) -> list:
        p = self.policy
        return [job.user_id, job.job_id, job.token, "ok" if ok else "error", value,
                p.max_attempts, int(p.retry_base_seconds * 1000),
                claim_n, owner, int(lease_seconds * 1000), *self.bounds.args(),
                *_report(progress)]

    async def finish_many(self, base: str, finishes: list[Finish], *, claim_n: int, owner: str,
                          lease_seconds: float) -> Batch:
        """Record the outcomes of several attempts of one shard (`base`), then
        claim up to claim_n jobs there, in one script call (finish_many.lua):
        each outcome as `finish` records it, lease check included, so
        `Batch.verdicts` holds one verdict per finish, in order ('stale' for
        a lost lease: that one recorded nothing, the others are unaffected).
        With no finishes it is a claim. One shard per call: its keys share
        one hash slot, as Redis Cluster requires."""
        p = self.policy
        args: list = [p.max_attempts, int(p.retry_base_seconds * 1000), claim_n, owner,
                      int(lease_seconds * 1000), *self.bounds.args()]
        for f in finishes:
            job = f.job
            if self.keys.shards > 1 and self.keys.user_base(job.user_id) != base:
                raise ValueError(f"job {job.job_id} is not of shard {base}")
            args += [job.user_id, job.job_id, job.token, "ok" if f.ok else "error", f.value,
                     *_report(f.progress, padded=True)]
        return await self._call("finish_many", base, *args)

    async def progress(self, job: Claimed, value: float, message: str | None) -> str | None:
        """Record a progress report of the attempt `job` holds (progress.lua):
        the update's cursor ("" when nobody follows the job: stored on it, no
        update), or None when the lease was lost (nothing recorded)."""
        return await self._call(
            "progress", self.keys.user_base(job.user_id), job.user_id, job.job_id, job.token,
            repr(float(value)), "0" if message is None else "1", message or "",
            *self.bounds.args())

    async def heartbeat(self, jobs: list[Claimed], lease_seconds: float) -> list[str]:
        """Extend leases; returns the members (uid:jid) whose lease was lost."""
        by_base: dict[str, list] = {}
        for job in jobs:
            by_base.setdefault(self.keys.user_base(job.user_id), []).extend(
                [job.member, job.token]
            )
        lost: list[str] = []
        for base, pairs in by_base.items():
            lost += await self._call("heartbeat", base, int(lease_seconds * 1000), *pairs)
        return lost

    async def reclaim(self, base: str) -> int:
        """Fail or retry the jobs of dead workers whose lease expired."""
        p = self.policy
        return await self._call("reclaim", base, p.max_attempts,
                                int(p.retry_base_seconds * 1000), *self.bounds.args())

    async def release(self, job: Claimed) -> bool:
        """Hand a running job back at shutdown, its attempt not counted."""
        base = self.keys.user_base(job.user_id)
        return await self._call("release", base, job.user_id, job.job_id, job.token)

    def signal_keys(self) -> list[str]:
        """The shards' wake-up lists, pushed to by every enqueue, finish and release."""
        return [Keys.signal(base) for base in self.keys.all_bases()]

    async def wait_signal(self, keys: list[str], timeout: int, *, client: Redis | None = None
                          ) -> str | None:
        """Take a wake-up token from the first of `keys` that has one, waiting up
        to `timeout` seconds (BLPOP: it holds its connection meanwhile, so pass a
        client of its own). The key it came from; None when none came."""
        got = await (client or self.redis).blpop(keys, timeout)
        return got[0] if got else None

    async def return_signal(self, key: str, *, client: Redis | None = None) -> None:
        """Put back a token taken but not used, for another worker."""
        await (client or self.redis).lpush(key, "1")

    # ---- the queue's shape (the API's metrics, a burst worker's exit) ----

    async def shape(self) -> Shape:
        """What the queue holds now, over all shards, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for base in self.keys.all_bases():
                pipe.llen(Keys.rotation(base))
                pipe.zcard(Keys.delayed(base))
                pipe.zcard(Keys.leases(base))
                pipe.llen(Keys.archive(base))
            counts = await pipe.execute()
        return Shape(*(sum(counts[i::4]) for i in range(4)))

    async def is_idle(self) -> bool:
        """No job waits, waits for a retry, or runs, for any user."""
        shape = await self.shape()
        return not (shape.in_rotation or shape.delayed or shape.running)

    async def head_wait(self) -> float:
        """Seconds the job that runs next has waited since it was enqueued: the
        longest of the shards' rotation heads; 0 when nothing waits."""
        return max([await self._head_wait(base) for base in self.keys.all_bases()], default=0.0)

    async def _head_wait(self, base: str) -> float:
        uid = await self.redis.lindex(Keys.rotation(base), 0)
        if not uid:
            return 0.0
        best = await self.redis.zrange(Keys.lanes(base, uid), 0, 0)  # its turn starts that lane
        lane = Keys.lane(base, uid, best[0]) if best and best[0] else Keys.pending(base, uid)
        jid = await self.redis.lindex(lane, 0)
        created = jid and await self.redis.hget(Keys.job(base, jid), "created")
        return max(0.0, time.time() - int(created) / 1000) if created else 0.0

    # ---- the archiver (the API) ----

    async def archive_batch(self, base: str, limit: int = 200,
                            per_read: int | None = None) -> list[JobRecord]:
        """Jobs with changes MongoDB has not seen yet, oldest first. `per_read`: the
        job hashes read (and turned into records) per round trip; a caller that
        shares its event loop with requests passes a small number, so that no
        single stretch of parsing holds them up (one of 200 took milliseconds)."""
        members = await self.redis.lrange(Keys.archive(base), 0, limit - 1)
        jids = list(dict.fromkeys(_split_member(m)[2] for m in members))
        step = per_read or len(jids) or 1
        found = []
        for start in range(0, len(jids), step):
            part = jids[start:start + step]
            async with self.redis.pipeline(transaction=False) as pipe:
                for jid in part:
                    pipe.hgetall(Keys.job(base, jid))
                rows = await pipe.execute()
            found += [JobRecord.from_fields(f, jid) for jid, f in zip(part, rows) if f]
        gone = set(jids) - {r.id for r in found}
        for m in members:  # records that expired before they were archived
            if _split_member(m)[2] in gone:
                await self.redis.lrem(Keys.archive(base), 1, m)
        return found

    async def listed_for(self, uid: str, limit: int) -> list[JobRecord] | None:
        """The user's jobs with changes listed for the archiver now, as Redis holds
        them; None when more than `limit` entries of any user wait in its shard
        (read those with archive_batch). Entries stay listed."""
        members = await self.redis.lrange(Keys.archive(self.keys.user_base(uid)), 0, limit)
        if len(members) > limit:
            return None
        jids = list(dict.fromkeys(jid for owner, _, jid in map(_split_member, members)
                                  if owner == uid))
        return list((await self.get_many(uid, jids)).values()) if jids else []

    async def running(self, uid: str | None) -> list[tuple[str, str]]:
        """(uid, jid) of the jobs running now: the user's (its busy lanes), or
        everyone's (the shards' leases)."""
        if uid is not None:
            return [(uid, jid) for jid in
                    await self.redis.hvals(Keys.busy(self.keys.user_base(uid), uid))]
        async with self.redis.pipeline(transaction=False) as pipe:
            for base in self.keys.all_bases():
                pipe.zrange(Keys.leases(base), 0, -1)
            shards = await pipe.execute()
        return [(owner, jid) for members in shards
                for owner, _, jid in map(_split_member, members)]

    async def mark_archived(
        self, base: str, jobs: list[JobRecord], result_ttl: int, finished_retention: int
    ) -> None:
        """These versions are in MongoDB now: one script call for the batch."""
        args: list = [result_ttl, finished_retention]
        for job in jobs:
            args += [job.user_id, job.id, job.version]
        await self._call("archived", base, *args)

    # ---- events (the API) ----

    async def last_shard_event(self, base: str) -> str:
        """The id of the shard stream's newest entry ("0-0" when it is empty):
        where a reader that wants only new events starts."""
        last = await self.redis.xrevrange(Keys.shard_events(base), count=1)
        return last[0][0] if last else "0-0"

    async def read_shard_events(self, base: str, after: str, *, count: int, block_ms: int,
                                client: Redis | None = None) -> list[ShardEvent]:
        """The shard stream's entries after `after`, waiting up to block_ms for
        the first (XREAD BLOCK: it holds its connection, so pass a client of its own)."""
        reply = await (client or self.redis).xread(
            {Keys.shard_events(base): after}, count=count, block=block_ms)
        return [ShardEvent(entry_id, f["u"], f["c"], f.get("j"), f.get("i"), f.get("k"),
                           f.get("x"))
                for _, entries in reply or () for entry_id, f in entries]

    async def has_event(self, uid: str, cursor: str) -> bool:
        """The user's stream still holds the event `cursor` (one can resume after it)."""
        stream = Keys.user_events(self.keys.user_base(uid), uid)
        return bool(await self.redis.xrange(stream, min=cursor, max=cursor, count=1))

    async def event_bodies(self, events: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The job JSON of (uid, cursor) events, from the users' own streams in
        one round trip; events those streams no longer hold are left out."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid, cursor in events:
                stream = Keys.user_events(self.keys.user_base(uid), uid)
                pipe.xrange(stream, min=cursor, max=cursor, count=1)
            rows = await pipe.execute()
        return {event: row[0][1]["j"] for event, row in zip(events, rows) if row}

    async def events_after(self, uid: str, after: str, count: int = 1000):
        """Retained events of a user after a cursor: [(cursor, JobRecord)]."""
        stream = Keys.user_events(self.keys.user_base(uid), uid)
        rows = await self.redis.xrange(stream, min=f"({after}", count=count)
        return [(cid, JobRecord.from_json(f["j"])) for cid, f in rows]

    # ---- a job's updates (jobUpdates, the API) ----

    def _updates_key(self, uid: str, jid: str) -> str:
        return Keys.updates(self.keys.user_base(uid), jid)

    @staticmethod
    def _update(cursor: str, fields: dict) -> Update:
        return Update(cursor, UpdateKind(fields["k"]), JobRecord.from_json(fields["j"]))

    async def last_update(self, uid: str, jid: str) -> Update | None:
        """The newest update the job's stream holds; None when it has none
        (never started, or forgotten)."""
        rows = await self.redis.xrevrange(self._updates_key(uid, jid), count=1)
        return self._update(*rows[0]) if rows else None

    async def watch(self, uid: str, jid: str) -> tuple[JobRecord | None, str | None]:
        """A jobUpdates subscription starts (watch.lua): the job's updates are
        recorded from now on. The job as Redis holds it (None: not there, or
        not the user's) and the cursor of its newest update (None: none yet),
        both as of that moment."""
        return await self._call("watch", self.keys.user_base(uid), uid, jid)

    async def has_update(self, uid: str, jid: str, cursor: str) -> bool:
        """The job's stream still holds the update `cursor` (one can resume after it)."""
        key = self._updates_key(uid, jid)
        return bool(await self.redis.xrange(key, min=cursor, max=cursor, count=1))

    async def updates_after(self, uid: str, jid: str, after: str, count: int = 500
                            ) -> list[Update]:
        """The job's retained updates after a cursor, oldest first."""
        rows = await self.redis.xrange(self._updates_key(uid, jid), min=f"({after}", count=count)
        return [self._update(cursor, f) for cursor, f in rows]

    async def update_bodies(self, updates: list[tuple[str, str, str]]
                            ) -> dict[tuple[str, str, str], Update]:
        """The (uid, jid, cursor) updates, read from their jobs' streams in one
        round trip; those no longer held are left out."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid, jid, cursor in updates:
                pipe.xrange(self._updates_key(uid, jid), min=cursor, max=cursor, count=1)
            rows = await pipe.execute()
        return {u: self._update(*row[0]) for u, row in zip(updates, rows) if row}

    # ---- counters (the API's throttles) ----

    async def count(self, key: str, window_seconds: int, by: int = 1) -> int:
        """Add `by` to a counter (a key of engine/keys.py) that lives
        `window_seconds` from its first count; returns the new total. Atomic:
        parallel callers cannot all pass a read-then-check."""
        return await self._call("count", key, by, window_seconds)

    async def clear_count(self, key: str) -> None:
        await self.redis.delete(key)

    # ---- operators (the admin API; CONTRACT §9) ----

    async def set_limits(self, uid: str, concurrency: int | None = None,
                         weight: int | None = None, starts_per_minute: int | None = None,
                         paused: bool | None = None) -> Limits:
        """Store the given limits (None: leave as is); the user's limits as stored.
        The claim script reads them at each start (limits.lua, claim in _lib.lua):
        concurrency (lanes at once), weight (turns per round), starts per minute
        (0: no limit), paused."""
        args: list = [uid]
        for field, value in (("concurrency", concurrency), ("weight", weight),
                             ("spm", starts_per_minute), ("paused", paused)):
            if value is not None:
                args += [field, int(value)]
        return await self._call("limits", self.keys.user_base(uid), *args)

    async def limits_of(self, uids: list[str]) -> dict[str, Limits]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid in uids:
                pipe.hmget(Keys.limits(self.keys.user_base(uid), uid),
                           "concurrency", "weight", "spm", "paused")
            rows = await pipe.execute()
        return {uid: decode("limits", ["ok", *row]) for uid, row in zip(uids, rows)}

    async def retry(self, uid: str, jid: str, history: JobRecord | None = None
                    ) -> Retried | None:
        """Put a FAILED or CANCELLED job back at the back of its user's queue
        (NotFinished otherwise). `history`, the job's MongoDB record, re-creates
        a job Redis has forgotten; None: no such job of the user's."""
        args: list = [uid, jid]
        if history is not None:
            args += [history.request_data, int(history.created_at.timestamp() * 1000),
                     history.version, history.status.value, history.ordering_key or "",
                     history.priority or 0,
                     "" if history.run_at is None else int(history.run_at.timestamp() * 1000)]
        return await self._call("retry", self.keys.user_base(uid), *args)

    async def purge(self, uid: str, batch: int = PURGE_BATCH) -> int:
        """Cancel every QUEUED job of the user, a batch per script call; how many."""
        total, left = 0, 1
        while left:
            cancelled, left = await self._call("purge", self.keys.user_base(uid), uid, batch,
                                               *self.bounds.args())
            total += cancelled
        return total

    async def recount(self, base: str) -> int:
        """Recount the shard's counters and backlog set from its lists and leases;
        how many values were wrong (and are now corrected)."""
        return await self._call("recount", base)

    async def totals(self) -> Totals:
        async with self.redis.pipeline(transaction=False) as pipe:
            for base in self.keys.all_bases():
                pipe.hmget(Keys.counts(base), "queued", "scheduled", "dwell")
                pipe.zcard(Keys.leases(base))  # a lease per running job: its own count
                pipe.zcard(Keys.backlog(base))
                pipe.scard(Keys.paused(base))
            rows = await pipe.execute()
        queued = processing = scheduled = waiting = 0
        for (q, s, dwell), p, backlog, paused in zip(*[iter(rows)] * 4):
            queued += int(q or 0)
            processing += int(p or 0)
            scheduled += int(s or 0)
            # users waiting for a due time (runAt, back-off, start rate) are not waiting to start
            waiting += max(0, backlog - int(dwell or 0) - paused)
        return Totals(queued, processing, scheduled, waiting)

    async def backlog(self, top: int | None = None) -> list[tuple[str, int]]:
        """Users with QUEUED jobs and how many, most first (ties: user id, descending,
        as ZREVRANGE orders them), merged from the shards' backlog sets: the
        first `top` of them (each shard's first `top` suffice), or all."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for base in self.keys.all_bases():
                pipe.zrevrange(Keys.backlog(base), 0, -1 if top is None else top - 1,
                               withscores=True)
            rows = await pipe.execute()
        users = [(uid, int(score)) for row in rows for uid, score in row]
        users.sort(key=lambda u: (u[1], u[0]), reverse=True)
        return users if top is None else users[:top]

    async def user_queues(self, uids: list[str]) -> dict[str, UserQueue]:
        """Each user's live queue: two round trips for the whole page."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid in uids:
                base = self.keys.user_base(uid)
                pipe.zscore(Keys.backlog(base), uid)
                pipe.hlen(Keys.busy(base, uid))
                pipe.lindex(Keys.pending(base, uid), 0)
                pipe.scard(Keys.scheduled(base, uid))
            rows = await pipe.execute()
        heads = list(zip(uids, rows[0::4], rows[1::4], rows[2::4]))
        scheduled = dict(zip(uids, rows[3::4]))
        async with self.redis.pipeline(transaction=False) as pipe:
            for uid, _, _, head in heads:
                if head:
                    pipe.hget(Keys.job(self.keys.user_base(uid), head), "created")
            created = iter(await pipe.execute())
        return {uid: UserQueue(queued=int(n or 0), processing=running,
                               scheduled=scheduled[uid],
                               oldest_queued_ms=int(next(created) or 0) or None if head else None)
                for uid, n, running, head in heads}

    async def throughput(self, minutes: int) -> list[Point]:
        """The last `minutes` of 10 s buckets over all shards, oldest first, the
        current (partial) bucket last. A bucket without changes on a shard
        carries that shard's queued depth on from the one before."""
        seconds, _ = await self.redis.time()
        last = seconds // BUCKET_SECONDS
        buckets = list(range(last - minutes * 60 // BUCKET_SECONDS + 1, last + 1))
        bases = self.keys.all_bases()
        async with self.redis.pipeline(transaction=False) as pipe:
            for base in bases:
                pipe.hget(Keys.counts(base), "queued")
                for b in buckets:
                    pipe.hmget(Keys.throughput(base, b), "e", "c", "f", "q0", "dq")
            rows = await pipe.execute()
        points = [Point(at=b * BUCKET_SECONDS) for b in buckets]
        per_shard = len(buckets) + 1
        for s in range(len(bases)):
            now_queued, *shard = rows[s * per_shard:(s + 1) * per_shard]
            # before the window's first change the depth is that change's q0;
            # with no change in the window, it is what the shard holds now
            depth = next((int(r[3]) for r in shard if r[3] is not None), int(now_queued or 0))
            for point, (e, c, f, q0, dq) in zip(points, shard):
                point.enqueued += int(e or 0)
                point.completed += int(c or 0)
                point.failed += int(f or 0)
                depth = int(q0) + int(dq) if dq is not None else depth
                point.queued += depth
        return points
