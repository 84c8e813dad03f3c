"""Live events: one reader per shard fans finished jobs out to listeners.

Workers append each finished job to its user's stream (kept for replay) and
to the shard's stream. Here one task per shard tails the shard stream with a
blocking XREAD and hands each event, parsed once, to the in-memory listeners
of its user: thousands of subscriptions cost a handful of Redis connections.

A listener that asks for `after` first replays its user's stream after that
cursor, then takes live events newer than the last one it replayed: no gap,
no repeat. A listener that falls too far behind is re-synced from the user's
stream the same way instead of growing without bound.

jobUpdates (CONTRACT §8) listens to one job the same way: the same readers
hand each update noted in the shard stream to the listeners of its job (and
never to `processed` ones), and the job's own stream is what a listener
replays, resumes and catches up from.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from engine import connection
from engine.jobs import JobRecord, Update, UpdateKind
from engine.loop import cancel_and_wait
from engine.queue import Queue, ShardEvent

from ..errors import BadUserInput
from ..http.metrics import CATCH_UPS

log = logging.getLogger(__name__)

CURSOR = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")  # with fullmatch: no "\n" after it
STREAM_ID_MAX = 2**64 - 1  # each part of a Redis stream id is a 64-bit unsigned number
LISTENER_BUFFER = 10_000


def cursor_key(cursor: str) -> tuple[int, int]:
    """The order of a stream id that came from Redis (trusted: see parse_cursor)."""
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq or 0)


def parse_cursor(cursor: str) -> tuple[int, int]:
    """A client's `after` as a stream id key; BadUserInput unless Redis would take it.

    Strict, so nothing Redis refuses gets that far: ASCII digits only (`\\d` is
    also "١"), nothing around them, each part within 64 bits."""
    match = CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None:
        raise BadUserInput("malformed cursor: expected the `cursor` of an event",
                           argument="after")
    key = int(match[1]), int(match[2])
    if max(key) > STREAM_ID_MAX:
        raise BadUserInput("malformed cursor: out of range", argument="after")
    return key


class Listener:
    """One subscription's place in the fan-out.

    Events wait in `events` until the listener's task takes them, unless a
    `sink` is set: then `put` hands each one on at once (no task switch per
    listener), and `last` follows what went out. A sink that refuses an event
    is dropped and the task takes over again from the user's stream, so
    nothing is lost or sent twice on the way back.
    """

    def __init__(self, data: str | None = None):
        self.events: asyncio.Queue = asyncio.Queue(LISTENER_BUFFER)
        self.lagged = False
        self.last = (0, 0)  # cursor key of the last event handed on
        self.sink: Callable[..., bool] | None = None
        self.data = data  # a job's listener: its request data (updates leave it out)
        self.ended = False  # a job's listener: its terminal update went out by the sink

    def put(self, event: tuple[str, JobRecord]) -> None:
        if self.sink is not None:
            if not self._sink(event):
                self._fall_behind()
            return
        if self.lagged:
            return
        try:
            self.events.put_nowait(event)
        except asyncio.QueueFull:
            self._fall_behind()

    def _fall_behind(self) -> None:
        """Drop what waits and tell the task to re-read the user's stream from
        `last` (see listen()); events until then are read there, not queued."""
        self.sink = None
        self.lagged = True
        while not self.events.empty():
            self.events.get_nowait()
        self.events.put_nowait(None)

    def _sink(self, event: tuple[str, JobRecord]) -> bool:
        key = cursor_key(event[0])
        if key <= self.last:
            return True  # already handed on
        try:
            sent = self.sink(*event)
        except Exception:
            log.exception("event sink failed; the listener goes back to its task")
            return False
        if sent:
            self.last = key
            if len(event) == 3 and event[1].terminal:  # a job's last update: the
                self.ended = True                       # listening task can stop
                self.sink = None
                self.events.put_nowait(None)
        return sent


class EventHub:
    def __init__(self, queue: Queue, blocking_redis: Redis):
        self.queue = queue
        self.redis = blocking_redis  # XREAD BLOCK holds its connection while it waits
        # a user's id: `processed` listeners; (user id, job id): jobUpdates ones
        self._listeners: dict[str | tuple[str, str], set[Listener]] = defaultdict(set)
        self._readers: list[asyncio.Task] = []
        self._on_event: list[Callable[[str], None]] = []

    # ---- lifecycle ----

    async def start(self) -> None:
        await connection.ready(self.queue.redis)  # a cluster's slots, before concurrent calls
        await connection.ready(self.redis)
        for base in self.queue.keys.all_bases():
            start = await self.queue.last_shard_event(base)
            self._readers.append(asyncio.create_task(self._read(base, start)))

    async def stop(self) -> None:
        await cancel_and_wait(*self._readers)
        self._readers.clear()

    def on_event(self, callback: Callable[[str], None]) -> None:
        """Call back (with the user id) on every event, e.g. to wake the archiver."""
        self._on_event.append(callback)

    # ---- the reader ----

    async def _read(self, base: str, last: str) -> None:
        backoff = 0.1
        while True:
            try:
                # block well under the client's socket timeout (engine/connection.py)
                entries = await self.queue.read_shard_events(
                    base, last, count=1000, block_ms=1000, client=self.redis)
                bodies = await self._large_bodies(entries)
                updates = await self._updates(entries)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if asyncio.current_task().cancelling():  # redis-py turned our cancel into this
                    raise asyncio.CancelledError from exc
                log.warning("event reader: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for entry in entries:
                last = entry.entry_id
                self._dispatch(entry, bodies, updates)

    async def _large_bodies(self, entries: list[ShardEvent]) -> dict[tuple[str, str], str]:
        """The bodies the shard stream left out (jobs over QUEUE_EVENT_INLINE_BYTES,
        see finish_terminal in engine/lua/_lib.lua), for users someone listens to:
        one pipelined read of their own streams per batch. Small events, the
        common case, cost no extra round trip; the shard stream stays small in
        bytes however large the jobs are."""
        wanted = [(e.user_id, e.cursor) for e in entries
                  if e.body is None and e.kind is None and (
                      e.user_id in self._listeners or (e.user_id, e.job_id) in self._listeners)]
        return await self.queue.event_bodies(wanted) if wanted else {}

    async def _updates(self, entries: list[ShardEvent]) -> dict[tuple[str, str, str], Update]:
        """The updates the shard stream notes without their body (STARTED, or a
        large one: see job_update in engine/lua/_lib.lua) of jobs someone
        listens to, read from their jobs' streams in one pipelined round trip
        per batch."""
        wanted = [(e.user_id, e.job_id, e.cursor) for e in entries
                  if e.kind is not None and e.body is None
                  and (e.user_id, e.job_id) in self._listeners]
        return await self.queue.update_bodies(wanted) if wanted else {}

    def _dispatch(self, entry: ShardEvent, bodies: dict[tuple[str, str], str],
                  updates: dict[tuple[str, str, str], Update]) -> None:
        uid = entry.user_id
        if entry.kind is not None:  # a job's update: for its jobUpdates listeners only
            listeners = self._listeners.get((uid, entry.job_id))
            if not listeners:
                return
            update = (Update(entry.cursor, UpdateKind(entry.kind), JobRecord.from_json(entry.body))
                      if entry.body is not None
                      else updates.get((uid, entry.job_id, entry.cursor)))
            if update:  # else: gone already, or a listener came while it was read (see below)
                self._to_job(listeners, update)
            return
        for callback in self._on_event:
            callback(uid)
        listeners = self._listeners.get(uid, ())
        if not listeners and not (entry.update and (uid, entry.job_id) in self._listeners):
            return
        body = entry.body or bodies.get((uid, entry.cursor))
        if body is None:
            # A listener that came while the bodies were read: the event ended
            # before it listened (with `after`, its replay has it). Or the user's
            # stream dropped it already (QUEUE_EVENTS_KEEP newer events): a replay
            # would not find it either.
            return
        record = JobRecord.from_json(body)
        event = (entry.cursor, record)
        for listener in listeners:
            listener.put(event)
        if entry.update is not None:  # the job's terminal update: the same body
            job_listeners = self._listeners.get((uid, entry.job_id))
            if job_listeners:
                self._to_job(job_listeners, Update(entry.update, UpdateKind(record.status.value),
                                                   record))

    @staticmethod
    def _to_job(listeners: set[Listener], update: Update) -> None:
        update.job.request_data = next(iter(listeners)).data or update.job.request_data
        event = (update.cursor, update.kind, update.job)
        for listener in listeners:
            listener.put(event)

    # ---- listeners ----

    def add(self, key: str | tuple[str, str], data: str | None = None) -> Listener:
        """A listener of a user's events (key: the user id) or of one job's
        updates (key: (user id, job id), with the job's request data)."""
        listener = Listener(data)
        self._listeners[key].add(listener)
        return listener

    def remove(self, key: str | tuple[str, str], listener: Listener) -> None:
        listeners = self._listeners.get(key)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[key]

    async def check_cursor(self, uid: str, after: str) -> None:
        """A cursor is valid while its event is retained (or "0": from the start).

        Both ways a subscription runs (graph/schema.py and graph/live/fanout.py) come
        through here, so they refuse the same cursors with the same error."""
        if after == "0":
            return
        after = "%d-%d" % parse_cursor(after)
        if not await self.queue.has_event(uid, after):
            raise BadUserInput(
                "cursor unknown or too old: it is no longer retained; "
                "subscribe without `after` to start from now", argument="after")

    async def listen(self, uid: str, after: str | None = None, *,
                     sink: Callable[[str, JobRecord], bool] | None = None,
                     ) -> AsyncIterator[tuple[str, JobRecord]]:
        """The user's events: those after `after` first, then live ones, in order.

        `after` is a cursor check_cursor accepted (graph/live/subscription.py
        checks it before it comes here). With `sink` (a function that sends an
        event at once and says whether it could), live events go straight to
        it from the reader whenever this generator has nothing older left to
        yield; the rest are yielded.
        """
        listener = self.add(uid)
        try:
            if after is not None:
                listener.last = (0, 0) if after == "0" else parse_cursor(after)
                after = "%d-%d" % listener.last
                async for cursor, job in self._replay(uid, after):
                    listener.last = cursor_key(cursor)
                    yield cursor, job
            while True:
                if sink is not None and listener.events.empty():
                    listener.sink = sink  # caught up: the reader sends from here on
                event = await listener.events.get()
                if event is None:  # fell behind: catch up from the user's stream
                    listener.lagged = False
                    CATCH_UPS.inc()
                    async for cursor, job in self._replay(uid, "%d-%d" % listener.last):
                        listener.last = cursor_key(cursor)
                        yield cursor, job
                    continue
                key = cursor_key(event[0])
                if key <= listener.last:
                    continue  # already replayed
                listener.last = key
                yield event
        finally:
            listener.sink = None
            self.remove(uid, listener)

    async def check_update_cursor(self, uid: str, jid: str, after: str) -> None:
        """jobUpdates' `after`: a cursor of one of the job's retained updates,
        or "0-0" (every update retained: the cursor of a job's first update
        when it had none yet)."""
        key = parse_cursor(after)
        if key != (0, 0) and not await self.queue.has_update(uid, jid, "%d-%d" % key):
            raise BadUserInput(
                "cursor unknown or too old: not an update of this job that is still "
                "retained; subscribe without `after` for the job's current state",
                argument="after")

    async def job_updates(self, uid: str, record: JobRecord, after: str | None = None, *,
                          sink: Callable[..., bool] | None = None,
                          ) -> AsyncIterator[tuple[str, UpdateKind, JobRecord]]:
        """One job's updates as (cursor, kind, job), until its terminal one.

        Without `after`, the first is the job's current state (`record`, its
        MongoDB copy, stands in when Redis has forgotten the job); with it (a
        cursor check_update_cursor accepted), the updates after it. Then live
        ones; `sink` as in `listen`."""
        jid = record.id
        key = (uid, jid)
        listener = self.add(key, record.request_data)
        try:
            # from here on the job's updates are recorded, and this listener hears them
            live, cursor = await self.queue.watch(uid, jid)
            if after is None:
                current = live or record
                kind = UpdateKind.of_status(current.status)
                cursor = cursor or "0-0"
                listener.last = cursor_key(cursor)
                yield cursor, kind, current
                if kind.terminal:
                    return
            else:
                listener.last = parse_cursor(after)
            async for update in self._replay_job(uid, jid, listener):
                yield update
                if update[1].terminal:
                    return
            current = live or record
            if after is not None and current.status.terminal:
                # it ended before anyone followed it ("0-0"): its end was not recorded
                yield cursor or "0-0", UpdateKind.of_status(current.status), current
                return
            while True:
                if sink is not None and listener.events.empty() and not listener.ended:
                    listener.sink = sink  # caught up: the reader sends from here on
                event = await listener.events.get()
                if event is None:
                    if listener.ended:  # the sink sent the terminal update
                        return
                    listener.lagged = False
                    CATCH_UPS.inc()
                    async for update in self._replay_job(uid, jid, listener):
                        yield update
                        if update[1].terminal:
                            return
                    continue
                if cursor_key(event[0]) <= listener.last:
                    continue  # already replayed
                listener.last = cursor_key(event[0])
                yield event
                if event[1].terminal:
                    return
        finally:
            listener.sink = None
            self.remove(key, listener)

    async def _replay_job(self, uid: str, jid: str, listener: Listener):
        """The job's updates after the listener's last, moving `last` along."""
        while True:
            page = await self.queue.updates_after(uid, jid, "%d-%d" % listener.last)
            for update in page:
                update.job.request_data = listener.data or update.job.request_data
                listener.last = cursor_key(update.cursor)
                yield update.cursor, update.kind, update.job
            if len(page) < 500:
                return

    async def _replay(self, uid: str, after: str):
        while True:
            page = await self.queue.events_after(uid, after, count=500)
            for cursor, job in page:
                yield cursor, job
                after = cursor
            if len(page) < 500:
                return

    async def wait_for(self, listener: Listener, timeout: float) -> None:
        """Until an event of the user arrives (used by dequeue's long poll)."""
        try:
            await asyncio.wait_for(listener.events.get(), timeout)
        except asyncio.TimeoutError:
            pass
