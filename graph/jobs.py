"""The queue as the API offers it: Redis for live state, MongoDB for history."""

from __future__ import annotations

import base64
import binascii
import logging
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone

from bson import ObjectId
from redis.exceptions import RedisError

from engine import queue as engine
from engine.jobs import JobRecord, JobStatus, ms_to_datetime
from engine.scripts import CONSTANTS

from .settings import Settings
from .errors import BadUserInput, Conflict, NotFound, QueueFull, RateLimited
from .live.events import EventHub
from .archiver import Archiver
from .store import JobDocument

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 30.0
MAX_PAGE = 100
MAX_IDEMPOTENCY_KEY = 256
MAX_ORDERING_KEY_BYTES = 128  # CONTRACT §7
PRIORITIES = range(-CONSTANTS["PRIORITY_MAX"], CONSTANTS["PRIORITY_MAX"] + 1)


@dataclass(slots=True)
class Item:
    """One job to enqueue, as a client gave it (CONTRACT §4, §7)."""

    request_data: str
    idempotency_key: str | None = None
    ordering_key: str | None = None  # None or "": the user's default key
    priority: int = 0
    run_at: datetime | None = None
STORAGE_FULL = ("queue storage is full: Redis reached its memory limit (maxmemory); "
                "try again later")


def encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(f"job:{job_id}".encode()).decode()


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise BadUserInput("malformed cursor", argument="after") from None
    if not raw.startswith("job:"):
        raise BadUserInput("malformed cursor", argument="after")
    return raw[4:]


async def history_page(queue: engine.Queue, archiver: Archiver, uid: str | None,
                       status: str | None, first: int, after: str | None
                       ) -> tuple[list[JobRecord], bool]:
    """A page of jobs (one user's, or everyone's when uid is None), newest first:
    MongoDB has the history, Redis overlays the live state. (records, has_next)."""
    if not 0 <= first <= MAX_PAGE:
        raise BadUserInput(f"first must be between 0 and {MAX_PAGE}", argument="first")
    before = decode_cursor(after) if after else None
    if status == JobStatus.PROCESSING.value:
        return await _running_page(queue, uid, first, before)
    # read your own writes: records of new jobs
    await (archiver.flush() if uid is None else archiver.flush_user(uid))
    query = [] if uid is None else [JobDocument.user_id == uid]
    if before:
        query.append(JobDocument.id < before)
    if status:
        query.append(JobDocument.status == status)
    docs = await JobDocument.find(*query).sort(-JobDocument.id).limit(first + 1).to_list()
    records = [d.to_record() for d in docs[:first]]
    live_ids: dict[str, list[str]] = {}
    for r in records:
        if not r.status.terminal or r.dequeued_at is None:
            live_ids.setdefault(r.user_id, []).append(r.id)
    live = await queue.get_owned(live_ids)
    records = [live.get(r.id, r) for r in records]
    if status:
        records = [r for r in records if r.status.value == status]
    return records, len(docs) > first


async def _running_page(queue: engine.Queue, uid: str | None, first: int,
                        before: str | None) -> tuple[list[JobRecord], bool]:
    """PROCESSING jobs, newest first, from Redis: a job's start is not archived
    (it would cost the worker path a write per job), so MongoDB does not know
    which jobs run; Redis lists them (the user's busy lanes, or the leases)."""
    running = sorted(((jid, owner) for owner, jid in await queue.running(uid)
                      if before is None or jid < before), reverse=True)
    wanted: dict[str, list[str]] = {}
    for jid, owner in running[:first]:
        wanted.setdefault(owner, []).append(jid)
    live = await queue.get_owned(wanted)
    records = [live[jid] for jid, _ in running[:first]
               if jid in live and live[jid].status == JobStatus.PROCESSING]
    return records, len(running) > first


def _epoch(moment: datetime) -> float:
    """Unix seconds of a DateTime; one without a timezone is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


class JobService:
    """The queue's use cases for one API process: checks, then the engine and the history."""

    def __init__(self, queue: engine.Queue, hub: EventHub, archiver: Archiver,
                 settings: Settings):
        self.queue = queue
        self.hub = hub
        self.archiver = archiver
        self.settings = settings

    # ---- enqueue ----

    def _check_item(self, item: Item, now: float, index: int | None = None) -> None:
        data, key = item.request_data, item.idempotency_key
        where = {} if index is None else {"index": index}
        at = f" (item {index})" if index is not None else ""
        size = len(data.encode("utf-8", "surrogatepass"))
        if size > self.settings.queue_max_payload_bytes:
            raise BadUserInput(
                f"requestData is {size} bytes; the limit is "
                f"{self.settings.queue_max_payload_bytes} (QUEUE_MAX_PAYLOAD_BYTES)"
                + (f" (item {index})" if index is not None else ""), **where)
        if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            raise BadUserInput(f"idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
                               + (f" (item {index})" if index is not None else ""), **where)
        if item.priority not in PRIORITIES:
            raise BadUserInput(f"priority must be between -100 and 100{at}",
                               argument="priority", **where)
        if item.ordering_key:
            okey = item.ordering_key
            if len(okey.encode("utf-8", "surrogatepass")) > MAX_ORDERING_KEY_BYTES:
                raise BadUserInput(f"orderingKey is over {MAX_ORDERING_KEY_BYTES} bytes{at}",
                                   argument="orderingKey", **where)
            if any(unicodedata.category(c) == "Cc" for c in okey):
                raise BadUserInput(f"orderingKey has control characters{at}",
                                   argument="orderingKey", **where)
        if item.run_at is not None:
            ahead = _epoch(item.run_at) - now
            limit = self.settings.queue_max_delay_seconds
            if ahead > limit:
                raise BadUserInput(f"runAt is more than {limit} s ahead "
                                   f"(QUEUE_MAX_DELAY_SECONDS){at}", argument="runAt", **where)

    async def _check_rate(self, uid: str, count: int) -> None:
        limit = self.settings.queue_enqueue_rate_per_minute
        if not limit:
            return
        used = await self.queue.count_enqueues(uid, count)
        if used > limit:
            raise RateLimited(f"more than {limit} jobs a minute (QUEUE_ENQUEUE_RATE_PER_MINUTE)")

    async def enqueue(self, uid: str, items: list[Item]) -> list[JobRecord]:
        """Store the items in order, all or none; idempotency keys return earlier jobs.

        One Redis script stores them (Redis is the queue's durable store: run it
        with AOF); their MongoDB records follow through the archiver, in bulk
        and off the request path. `jobs` flushes those records before reading."""
        batch = len(items) > 1
        if len(items) > self.settings.queue_max_batch:
            raise BadUserInput(f"at most {self.settings.queue_max_batch} items (QUEUE_MAX_BATCH)")
        now = time.time()
        for i, item in enumerate(items):
            self._check_item(item, now, i if batch else None)
        rows = [engine.NewJob(str(ObjectId()), i.request_data, i.idempotency_key,
                              i.ordering_key or None, i.priority,
                              None if i.run_at is None else int(_epoch(i.run_at) * 1000))
                for i in items]
        try:
            await self._check_rate(uid, len(items))
            placed = await self.queue.enqueue(uid, rows, self.settings.queue_max_pending)
        except engine.QueueFull as full:
            msg = f"{self.settings.queue_max_pending} jobs already wait (QUEUE_MAX_PENDING)"
            if batch:
                raise QueueFull(f"item {full.index}: {msg}", index=full.index) from None
            raise QueueFull(msg) from None
        except RedisError as exc:
            if not engine.out_of_memory(exc):
                raise
            # nothing was stored (the script's first write was refused); the
            # operator's alert is on Redis memory (docs/operations.md)
            log.warning("enqueue refused: Redis is at its maxmemory")
            raise QueueFull(STORAGE_FULL) from None
        created_at = ms_to_datetime(placed[0].created_ms) if placed else None
        jobs: list[JobRecord] = []
        for row, result in zip(rows, placed):
            if result.created:
                jobs.append(JobRecord(id=row.job_id, user_id=uid, request_data=row.data,
                                      status=JobStatus.QUEUED, attempts=0,
                                      created_at=created_at, idempotency_key=row.idempotency_key,
                                      ordering_key=row.ordering_key, priority=row.priority,
                                      run_at=ms_to_datetime(row.run_at_ms),
                                      scheduled=(row.run_at_ms or 0) > placed[0].created_ms))
            else:  # an idempotency key seen before: the first job
                earlier = await self.get(uid, result.job_id)
                if earlier is None:
                    raise NotFound(f"job {result.job_id} of this idempotencyKey is gone")
                jobs.append(earlier)
        self.archiver.wake()
        return jobs

    # ---- reading ----

    async def get(self, uid: str, jid: str) -> JobRecord | None:
        live = await self.queue.get(uid, jid)
        if live is not None:
            return live
        doc = await JobDocument.find_one(JobDocument.id == jid, JobDocument.user_id == uid)
        return doc.to_record() if doc else None

    async def page(self, uid: str, status: str | None, first: int, after: str | None):
        """The user's jobs, newest first."""
        return await history_page(self.queue, self.archiver, uid, status, first, after)

    async def stats(self, uid: str) -> engine.Stats:
        return await self.queue.stats(uid)

    # ---- taking results, cancelling ----

    async def dequeue(self, uid: str, wait_seconds: float) -> JobRecord | None:
        if wait_seconds < 0 or wait_seconds != wait_seconds:
            raise BadUserInput("waitSeconds must be 0 or more", argument="waitSeconds")
        job = await self.queue.dequeue(uid)
        if job or wait_seconds == 0:
            return job
        deadline = time.monotonic() + min(wait_seconds, MAX_WAIT_SECONDS)
        listener = self.hub.add(uid)  # before looking again, so no finish slips between
        try:
            while True:
                job = await self.queue.dequeue(uid)
                remaining = deadline - time.monotonic()
                if job or remaining <= 0:
                    return job
                await self.hub.wait_for(listener, remaining)
        finally:
            self.hub.remove(uid, listener)

    async def cancel(self, uid: str, jid: str) -> JobRecord:
        try:
            job = await self.queue.cancel(uid, jid)
        except engine.NotQueued as exc:
            raise Conflict(f"only a QUEUED job can be cancelled; this one is {exc.status}",
                           status=exc.status) from None
        if job is not None:
            return job
        old = await JobDocument.find_one(JobDocument.id == jid, JobDocument.user_id == uid)
        if old is None:
            raise NotFound("no such job")
        raise Conflict(f"only a QUEUED job can be cancelled; this one is {old.status.value}",
                       status=old.status.value)
