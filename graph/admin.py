"""The operators' use cases (CONTRACT §9): what every user's queue holds, and
pausing, limiting, redriving and purging them.

Live figures come from the engine's per-shard counters and backlog sets
(kept by the transition scripts; no key is scanned), the history from
MongoDB. Who may call these is checked before (graph/permissions.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from pymongo import UpdateOne

from engine import queue as engine
from engine.jobs import JobRecord, JobStatus
from engine.queue import Limits, Point, UserQueue
from .settings import Settings

from .archiver import Archiver
from .errors import BadUserInput, Conflict, NotFound
from .jobs import history_page
from .store import JobDocument, User, count_by_user, users_by_id

log = logging.getLogger(__name__)

MAX_USERS_PAGE = 500
MAX_MINUTES = 60  # the throughput history Redis keeps (THROUGHPUT_KEEP_SECONDS)
RETRY_BATCH = 100  # FAILED jobs retryFailed reads from MongoDB at a time
# (low, high) of each limit; startsPerMinute 0 means no limit
BOUNDS = {"concurrency": (1, 100), "weight": (1, 100), "starts_per_minute": (0, 100_000)}
NAMES_CHUNK = 200  # users read by username at a time, past the ones with a backlog


@dataclass(slots=True)
class UserRow:
    user: User
    queue: UserQueue
    failed: int
    limits: Limits  # defaults applied


@dataclass(slots=True)
class Overview:
    users: int
    users_waiting: int
    queued: int
    processing: int
    scheduled: int
    completed_last_minute: int
    failed_last_minute: int
    oldest_wait_seconds: float | None


def _cursor(**position) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def _position(cursor: str) -> dict:
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, UnicodeError, ValueError):
        raise BadUserInput("malformed cursor", argument="after") from None
    if not isinstance(position, dict) or not ({"b", "n"} & set(position)):
        raise BadUserInput("malformed cursor", argument="after")
    return position


class AdminService:
    def __init__(self, queue: engine.Queue, archiver: Archiver, settings: Settings):
        self.queue = queue
        self.archiver = archiver
        self.settings = settings

    # ---- reading ----

    async def overview(self) -> Overview:
        totals = await self.queue.totals()
        last_minute = await self.queue.throughput(1)  # this 10 s and the five before
        waited = await self.queue.head_wait() if totals.users_waiting else None
        return Overview(
            users=await User.get_pymongo_collection().estimated_document_count(),
            users_waiting=totals.users_waiting, queued=totals.queued,
            processing=totals.processing, scheduled=totals.scheduled,
            completed_last_minute=sum(p.completed for p in last_minute),
            failed_last_minute=sum(p.failed for p in last_minute),
            oldest_wait_seconds=waited)

    async def throughput(self, minutes: int) -> list[Point]:
        if not 1 <= minutes <= MAX_MINUTES:
            raise BadUserInput(f"minutes must be 1 to {MAX_MINUTES}", argument="minutes")
        return await self.queue.throughput(minutes)

    async def users(self, first: int, after: str | None, by_backlog: bool
                    ) -> tuple[list[tuple[str, UserRow]], bool]:
        """A page of (cursor, row). By backlog: users with QUEUED jobs, most first
        (ties by user id), from the shards' backlog sets; then the rest by username.
        The first page reads only the top of each shard's set."""
        if not 0 <= first <= MAX_USERS_PAGE:
            raise BadUserInput(f"first must be between 0 and {MAX_USERS_PAGE}",
                               argument="first")
        position = _position(after) if after else {}
        picked: list[tuple[str, User]] = []
        backlog: list[tuple[str, int]] = []
        if by_backlog:
            top = None if position else first + 1
            backlog = await self.queue.backlog(top)
            if top is not None and len(backlog) < top:
                top = None  # that was all of it: the names below must skip these
        if by_backlog and "n" not in position:
            start = 0
            if "b" in position:  # the first entry past the cursor, in (queued, uid) descending
                after_entry = tuple(position["b"])
                start = next((i for i, (uid, n) in enumerate(backlog)
                              if (n, uid) < after_entry), len(backlog))
            chosen = backlog[start:start + first + 1]
            docs = await users_by_id([uid for uid, _ in chosen])
            picked = [(_cursor(b=[n, uid]), docs[uid]) for uid, n in chosen if uid in docs]
        if len(picked) <= first:
            if by_backlog and top is not None:
                backlog = await self.queue.backlog()  # the names below skip them all
            skip = {uid for uid, _ in backlog}
            picked += await self._by_name(position.get("n"), first + 1 - len(picked), skip)
        has_next = len(picked) > first
        picked = picked[:first]
        return [(c, row) for c, row in zip(
            [c for c, _ in picked], await self._rows([u for _, u in picked]))], has_next

    async def _by_name(self, after: str | None, n: int, skip: set[str]
                       ) -> list[tuple[str, User]]:
        """Up to n users by username after `after`, leaving out those in `skip`."""
        found: list[tuple[str, User]] = []
        while len(found) < n:
            query = [User.username_key > after] if after is not None else []
            docs = await User.find(*query).sort(+User.username_key).limit(NAMES_CHUNK).to_list()
            found += [(_cursor(n=d.username_key), d) for d in docs if str(d.id) not in skip]
            if len(docs) < NAMES_CHUNK:
                break
            after = docs[-1].username_key
        return found[:n]

    async def _rows(self, users: list[User]) -> list[UserRow]:
        uids = [str(u.id) for u in users]
        if not uids:
            return []
        await self.archiver.flush()  # FAILED jobs that finished a moment ago count
        queues = await self.queue.user_queues(uids)
        limits = await self.queue.limits_of(uids)
        failed = await count_by_user(uids, JobStatus.FAILED)
        return [UserRow(user=u, queue=queues[uid], failed=failed.get(uid, 0),
                        limits=self._with_defaults(limits[uid]))
                for u, uid in zip(users, uids)]

    def _with_defaults(self, limits: Limits) -> Limits:
        return Limits(
            concurrency=limits.concurrency or self.settings.queue_user_concurrency,
            weight=limits.weight or 1,
            starts_per_minute=limits.starts_per_minute or 0,
            paused=limits.paused)

    async def jobs(self, status: str | None, username: str | None, first: int,
                   after: str | None) -> tuple[list[JobRecord], bool]:
        """Any user's jobs, newest first (history_page). With FAILED: the dead-letter list."""
        uid = None if username is None else str((await self.user(username)).id)
        return await history_page(self.queue, self.archiver, uid, status, first, after)

    async def user(self, username: str) -> User:
        user = await User.find_one(User.username_key == username.casefold())
        if user is None:
            raise NotFound(f"no user {username!r}")
        return user

    # ---- changing ----

    async def set_limits(self, username: str, **changes) -> Limits:
        """Store the limits given (None: unchanged). Only `paused` takes effect
        yet; concurrency, weight and startsPerMinute wait for the scheduler of
        issue 14, which reads them from the same place."""
        for name, (low, high) in BOUNDS.items():
            value = changes.get(name)
            if value is not None and not low <= value <= high:
                raise BadUserInput(f"{name} must be {low} to {high}", argument=name)
        user = await self.user(username)
        return self._with_defaults(await self.queue.set_limits(str(user.id), **changes))

    async def retry_job(self, jid: str) -> JobRecord:
        await self.archiver.flush()
        doc = await JobDocument.find_one(JobDocument.id == jid)
        if doc is None:
            raise NotFound("no such job")
        try:
            retried = await self._retry(doc)
        except engine.NotFinished as exc:
            raise Conflict(f"only a FAILED or CANCELLED job can be retried; this one is "
                           f"{exc.status}", status=exc.status) from None
        if retried is None:
            raise NotFound("no such job")
        return retried

    async def retry_failed(self, username: str | None, finished_after: datetime | None) -> int:
        """Retry every FAILED job (of one user, finished after a time), RETRY_BATCH
        at a time, oldest first. Each job is redriven on its own, so an
        interrupted run leaves no job half-done; running it again retries the
        rest (those already redriven are QUEUED now, and are skipped)."""
        await self.archiver.flush()
        query = [JobDocument.status == JobStatus.FAILED]
        if username is not None:
            query.append(JobDocument.user_id == str((await self.user(username)).id))
        if finished_after is not None:
            if finished_after.tzinfo is None:
                finished_after = finished_after.replace(tzinfo=timezone.utc)
            query.append(JobDocument.finished_at > finished_after)
        done, last = 0, None
        while True:
            page = query + ([JobDocument.id > last] if last else [])
            docs = await JobDocument.find(*page).sort(+JobDocument.id).limit(
                RETRY_BATCH).to_list()
            for doc in docs:
                try:
                    done += await self._retry(doc) is not None
                except engine.NotFinished:
                    pass  # redriven already, or changed since it was read
            if len(docs) < RETRY_BATCH:
                return done
            last = docs[-1].id

    async def _retry(self, doc: JobDocument) -> JobRecord | None:
        """Redrive one job, and keep the run it replaces in its history (`retries`)."""
        retried = await self.queue.retry(doc.user_id, doc.id, doc.to_record())
        if retried is None:
            return None
        was = retried.before or doc.to_record()
        entry = {"status": was.status.value, "attempts": was.attempts, "error": was.error,
                 "startedAt": was.started_at, "finishedAt": was.finished_at,
                 "retriedAt": datetime.now(timezone.utc)}
        await JobDocument.get_pymongo_collection().bulk_write(
            [UpdateOne({"_id": doc.id}, {"$push": {"retries": entry}})])
        self.archiver.wake()
        return retried.job

    async def purge(self, username: str) -> int:
        user = await self.user(username)
        cancelled = await self.queue.purge(str(user.id))
        self.archiver.wake()
        return cancelled
