"""The engine on its own: `engine.queue.Queue` against a real Redis, no processes.

Each test drives the Lua scripts through the Queue methods a worker and the
API call, under a key prefix of its own. The state machine at the end throws
random sequences of those calls at the queue and checks, after every step,
that Redis agrees with a small model of it, that each user is in exactly
one place: idle, in the rotation, delayed for a retry, paused, or running
(docs/architecture.md), and that the shard's counters and backlog set say
what the lists and leases hold.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from collections import Counter
from dataclasses import dataclass

import hypothesis
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from engine import connection
from engine.jobs import Claimed, JobRecord, JobStatus
from engine.keys import Keys
from engine.queue import NotFinished, NotQueued, Queue, QueueFull
from tests.support import wait_until, wait_until_async

OWNER = "test-worker"
LEASE = 30.0  # seconds: longer than any test, so only the leases a test shortens expire


@pytest.fixture
async def redis(redis_url):
    client = connection.client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def make_queue(redis, settings_factory):
    """A Queue as the API and workers build it, under a fresh key prefix."""
    return lambda **overrides: Queue.from_settings(redis, settings_factory(**overrides))


@pytest.fixture
def queue(make_queue) -> Queue:
    return make_queue()


def users(n: int) -> list[str]:
    return [uuid.uuid4().hex[:8] for _ in range(n)]


async def enqueue(queue: Queue, uid: str, *names: str, max_pending: int = 100) -> list[str]:
    """Jobs named `<uid>-<name>`, their data the name."""
    done = await queue.enqueue(uid, [(f"{uid}-{n}", n, None) for n in names], max_pending)
    return [e.job_id for e in done]


async def claim(queue: Queue, n: int = 10, owner: str = OWNER, lease: float = LEASE):
    return (await queue.claim(queue.keys.base(0), n, owner, lease)).jobs


async def finish(queue: Queue, job: Claimed, ok: bool = True, value: str = "done",
                 claim_n: int = 0, owner: str = OWNER):
    return await queue.finish(job, ok, value, claim_n=claim_n, owner=owner, lease_seconds=LEASE)


def ids(jobs) -> list[str]:
    return [j.job_id for j in jobs]


async def eventually(call, message: str, timeout: float = 10.0):
    """Await call() until its value is truthy: polls with a deadline, never a fixed sleep."""
    return await wait_until_async(call, timeout=timeout, interval=0.01, message=message)


# ---- order and fairness ----

async def test_a_users_jobs_run_one_at_a_time_in_the_order_they_were_enqueued(queue):
    [ann] = users(1)
    a, b = await enqueue(queue, ann, "a", "b")

    first = await claim(queue)
    assert ids(first) == [a], "one job of a user at a time, the oldest"
    assert (first[0].data, first[0].attempts) == ("a", 1)
    [c] = await enqueue(queue, ann, "c")
    assert await claim(queue) == [], "the next waits until the first finishes"

    batch = await finish(queue, first[0], claim_n=5)
    assert batch.verdict == "completed"
    assert ids(batch.jobs) == [b], "finishing claims the user's next job in the same call"
    batch = await finish(queue, batch.jobs[0], claim_n=5)
    assert ids(batch.jobs) == [c]
    assert ids((await finish(queue, batch.jobs[0], claim_n=5)).jobs) == []
    assert await queue.is_idle()


async def test_a_claim_takes_one_job_per_user_in_rotation_order(queue):
    ann, bob, cy = users(3)
    ann1, ann2 = await enqueue(queue, ann, "1", "2")
    bob1, _ = await enqueue(queue, bob, "1", "2")
    [cy1] = await enqueue(queue, cy, "1")

    [first] = await claim(queue, n=1)
    assert first.job_id == ann1
    await finish(queue, first)  # ann goes to the back of the rotation, behind bob and cy

    assert ids(await claim(queue, n=10)) == [bob1, cy1, ann2]
    assert await claim(queue) == [], "every user with work left is running"
    stats = await queue.stats(bob)
    assert (stats.queued, stats.processing) == (1, 1)


# ---- outcomes ----

async def test_a_finished_job_is_ready_dequeued_once_and_announced_once(queue):
    [ann] = users(1)
    [jid] = await enqueue(queue, ann, "x")
    [job] = await claim(queue)

    batch = await finish(queue, job, value="X")

    assert batch.verdict == "completed"
    record = await queue.get(ann, jid)
    assert (record.status, record.processed_data, record.attempts) == (JobStatus.COMPLETED, "X", 1)
    assert (await queue.stats(ann)).ready == 1
    events = await queue.events_after(ann, "0-0")
    assert [(e.id, e.status, e.processed_data) for _, e in events] == [
        (jid, JobStatus.COMPLETED, "X")]

    out = await queue.dequeue(ann)
    assert (out.id, out.processed_data) == (jid, "X")
    assert out.dequeued_at is not None
    assert await queue.dequeue(ann) is None, "a job is dequeued at most once"
    assert (await queue.stats(ann)).ready == 0


async def test_an_error_retries_after_a_doubling_back_off_then_fails_for_good(make_queue):
    queue = make_queue(queue_max_attempts=3, queue_retry_base_seconds=0.05)
    ann, bob = users(2)
    [jid] = await enqueue(queue, ann, "flaky")
    [bob1] = await enqueue(queue, bob, "1")
    [job] = await claim(queue, n=1)

    batch = await finish(queue, job, ok=False, value="boom", claim_n=5)
    assert batch.verdict == "retry"
    assert ids(batch.jobs) == [bob1], "ann's job waits for its retry; bob's does not wait for it"
    assert batch.next_due_ms == 50, "the first back-off is the base"
    record = await queue.get(ann, jid)
    assert (record.status, record.attempts, record.last_error) == (JobStatus.QUEUED, 1, "boom")

    for attempt, back_off in ((2, 100), (3, None)):
        [job] = await eventually(lambda: claim(queue), "the retry to fall due")
        assert (job.job_id, job.attempts) == (jid, attempt)
        batch = await finish(queue, job, ok=False, value=f"boom {attempt}")
        if back_off:
            assert (batch.verdict, batch.next_due_ms) == ("retry", back_off)

    assert batch.verdict == "failed", "the last attempt failed: no more retries"
    record = await queue.get(ann, jid)
    assert (record.status, record.error, record.attempts) == (JobStatus.FAILED, "boom 3", 3)
    assert (await queue.dequeue(ann)).id == jid, "a failed job is ready like a completed one"
    assert [e.status for _, e in await queue.events_after(ann, "0-0")] == [JobStatus.FAILED]


# ---- leases ----

async def test_an_expired_lease_is_reclaimed_and_the_attempt_counts(make_queue):
    queue = make_queue(queue_retry_base_seconds=0)
    [ann] = users(1)
    [jid] = await enqueue(queue, ann, "x")
    [lost] = await claim(queue, owner="dead-worker", lease=0.05)

    await eventually(lambda: queue.reclaim(queue.keys.base(0)), "the lease to expire")

    record = await queue.get(ann, jid)
    assert (record.status, record.attempts) == (JobStatus.QUEUED, 1)
    assert record.last_error.startswith("lease expired")
    [again] = await claim(queue, owner="live-worker")
    assert (again.job_id, again.attempts) == (jid, 2)
    assert (await finish(queue, lost, owner="dead-worker")).verdict == "stale"
    assert (await finish(queue, again, owner="live-worker")).verdict == "completed"


async def test_an_expired_lease_at_the_last_attempt_fails_the_job(make_queue):
    queue = make_queue(queue_max_attempts=1)
    [ann] = users(1)
    [jid] = await enqueue(queue, ann, "x")
    await claim(queue, lease=0.05)

    await eventually(lambda: queue.reclaim(queue.keys.base(0)), "the lease to expire")

    record = await queue.get(ann, jid)
    assert (record.status, record.attempts) == (JobStatus.FAILED, 1)
    assert record.error.startswith("lease expired")
    assert (await queue.dequeue(ann)).id == jid
    assert await queue.is_idle()


async def test_a_heartbeat_keeps_a_lease_and_returns_the_ones_lost(queue):
    ann, bob = users(2)
    await enqueue(queue, ann, "a")
    await enqueue(queue, bob, "b")
    held, finished = await claim(queue, lease=0)  # both leases run out at once...
    await finish(queue, finished)

    lost = await queue.heartbeat([held, finished], LEASE)  # ...unless renewed

    assert lost == [finished.member], "a finished job's lease is gone"
    assert await queue.reclaim(queue.keys.base(0)) == 0, "the renewed lease holds"
    assert (await queue.get(ann, held.job_id)).status == JobStatus.PROCESSING


async def test_release_hands_a_job_back_to_the_front_without_counting_an_attempt(queue):
    ann, bob = users(2)
    ann1, _ = await enqueue(queue, ann, "1", "2")
    [bob1] = await enqueue(queue, bob, "1")
    [job] = await claim(queue, n=1, owner="stopping-worker")

    assert await queue.release(job) is True

    record = await queue.get(ann, ann1)
    assert (record.status, record.attempts, record.started_at) == (JobStatus.QUEUED, 0, None)
    again = await claim(queue, owner="other-worker")
    assert ids(again) == [ann1, bob1], "ann is back at the front, her job at her head"
    assert again[0].attempts == 1, "the handed-back run did not count"
    assert await queue.release(job) is False, "a lease already handed back"


async def test_a_finish_with_a_stale_token_records_nothing(queue):
    [ann] = users(1)
    [jid, nxt] = await enqueue(queue, ann, "x", "y")
    [job] = await claim(queue)
    impostor = Claimed(job.user_id, job.job_id, job.data, job.attempts, "other-worker:1")

    batch = await finish(queue, impostor, value="forged")

    assert batch.verdict == "stale"
    record = await queue.get(ann, jid)
    assert (record.status, record.processed_data) == (JobStatus.PROCESSING, None)
    assert await queue.events_after(ann, "0-0") == []
    assert await queue.dequeue(ann) is None
    assert await claim(queue) == [], f"{nxt} still waits behind the running job"
    assert (await finish(queue, job)).verdict == "completed", "the real lease still holds"


# ---- cancel ----

async def test_cancel_a_queued_job_and_conflict_on_a_running_or_finished_one(queue):
    ann, bob = users(2)
    a, b, c = await enqueue(queue, ann, "a", "b", "c")
    [running] = await claim(queue)

    cancelled = await queue.cancel(ann, b)
    assert (cancelled.id, cancelled.status) == (b, JobStatus.CANCELLED)
    with pytest.raises(NotQueued) as err:
        await queue.cancel(ann, a)
    assert err.value.status == "PROCESSING"
    with pytest.raises(NotQueued) as err:
        await queue.cancel(ann, b)
    assert err.value.status == "CANCELLED"
    assert await queue.cancel(ann, "no-such-job") is None
    assert await queue.cancel(bob, c) is None, "another user's job is not found"

    batch = await finish(queue, running, claim_n=1)
    assert ids(batch.jobs) == [c], "the cancelled job is skipped, never run"
    await finish(queue, batch.jobs[0])
    assert [(await queue.dequeue(ann)).id, (await queue.dequeue(ann)).id] == [a, c]
    assert await queue.dequeue(ann) is None, "a cancelled job is never ready"


async def test_cancelling_a_users_last_job_takes_them_out_of_the_rotation(queue):
    [ann] = users(1)
    [a] = await enqueue(queue, ann, "a")

    await queue.cancel(ann, a)

    assert await queue.is_idle(), "nothing waits, so nobody is left in the rotation"
    assert (await queue.stats(ann)).queued == 0


async def test_cancelling_a_job_waiting_for_its_retry_lets_the_next_one_run(make_queue):
    queue = make_queue(queue_retry_base_seconds=600)
    [ann] = users(1)
    flaky, after = await enqueue(queue, ann, "flaky", "after")
    [job] = await claim(queue)
    assert (await finish(queue, job, ok=False, value="boom", claim_n=1)).jobs == []

    assert (await queue.cancel(ann, flaky)).status == JobStatus.CANCELLED

    assert ids(await claim(queue)) == [after], "no need to wait out the cancelled job's back-off"


# ---- enqueue ----

async def test_an_idempotency_key_returns_the_first_job(queue):
    ann, bob = users(2)
    [first] = await queue.enqueue(ann, [("j1", "once", "order-17")], 100)
    assert first.created

    again = await queue.enqueue(ann, [("j2", "other", "order-17"), ("j3", "new", "k2"),
                                      ("j4", "new again", "k2")], 100)

    assert [(e.job_id, e.created) for e in again] == [("j1", False), ("j3", True), ("j3", False)]
    assert (await queue.get(ann, "j1")).request_data == "once", "the first job, unchanged"
    assert await queue.get(ann, "j2") is None
    assert (await queue.stats(ann)).queued == 2
    [bobs] = await queue.enqueue(bob, [("j5", "x", "order-17")], 100)
    assert (bobs.job_id, bobs.created) == ("j5", True), "keys are per user"


async def test_a_full_queue_refuses_all_of_a_batch(queue):
    [ann] = users(1)
    first, *_ = await enqueue(queue, ann, "1", "2", "3", max_pending=3)

    with pytest.raises(QueueFull) as err:
        await enqueue(queue, ann, "4", max_pending=3)
    assert err.value.index == 0
    await queue.cancel(ann, first)
    with pytest.raises(QueueFull) as err:
        await enqueue(queue, ann, "5", "6", max_pending=3)
    assert err.value.index == 1, "the item that did not fit"
    assert (await queue.stats(ann)).queued == 2, "all or none: nothing of the batch was stored"
    assert await queue.get(ann, f"{ann}-5") is None

    [ok] = await enqueue(queue, ann, "5", max_pending=3)
    assert ok == f"{ann}-5", "the freed place is taken"


async def test_a_known_idempotency_key_is_answered_even_when_the_queue_is_full(queue):
    [ann] = users(1)
    [first] = await queue.enqueue(ann, [("j1", "x", "k")], 1)

    [again] = await queue.enqueue(ann, [("j2", "x", "k")], 1)

    assert (again.job_id, again.created) == (first.job_id, False)


# ---- the state machine: random sequences of calls, checked after every step ----

USERS = ("ann", "bob", "cy")
OWNERS = ("w1", "w2")
MAX_PENDING = 6
MAX_ATTEMPTS = 2  # low, so that runs reach FAILED often
# The first retry's back-off (seconds) of each Queue the machine drives over the
# same keys: none (straight back to the rotation), short (waited out before the
# next claim, so a claim promotes it for sure), long (never due during a run).
BACK_OFFS = {"none": 0, "short": 0.001, "long": 600}
SOON_MS = 60_000  # a retry due sooner than this is a short one
PLACE_MARKS = {"idle": None, "rotation": "r", "delayed": "d", "running": "a", "paused": "p"}  # `…:u:<uid>:state`
MACHINE_SETTINGS = hypothesis.settings(max_examples=50, stateful_step_count=30, deadline=None,
                                       database=None)


def back_off_ms(back_off: str, attempts: int) -> int:
    """As attempt_failed in _lib.lua computes it: the base, doubled for each later attempt."""
    return math.floor(int(BACK_OFFS[back_off] * 1000) * 2 ** (attempts - 1))


class Model:
    """What the queue should hold, in plain Python: the rules of docs/architecture.md."""

    def __init__(self):
        self.pending = {u: [] for u in USERS}  # waiting job ids, oldest first
        self.ready = {u: [] for u in USERS}  # finished, not yet dequeued
        self.events = {u: [] for u in USERS}  # ids of the jobs announced as finished
        self.rotation: list[str] = []
        self.delayed: dict[str, int] = {}  # user -> when its head job's retry is due (ms)
        self.running: dict[str, Claimed] = {}  # user -> the lease of its one running job
        self.jobs: dict[str, tuple[str, str]] = {}  # job id -> (user, data)
        self.status: dict[str, JobStatus] = {}
        self.attempts: dict[str, int] = {}
        self.terminal: dict[str, JobStatus] = {}
        self.idempotency: dict[tuple[str, str], str] = {}
        self.leases: list[Claimed] = []  # every lease handed out, the lost ones too
        self.rounds: Counter = Counter()  # job id -> times an operator retried it
        self.paused: set[str] = set()  # users an operator paused
        self.parked: set[str] = set()  # paused users with work waiting: the paused place

    def place(self, uid: str) -> str:
        if uid in self.running:
            return "running"
        if uid in self.delayed:
            return "delayed"
        if uid in self.parked:
            return "paused"
        return "rotation" if uid in self.rotation else "idle"

    def holds(self, lease: Claimed) -> bool:
        return self.running.get(lease.user_id) == lease

    def lost_leases(self) -> list[Claimed]:
        return [lease for lease in self.leases if not self.holds(lease)]

    def not_cancelled(self) -> list[str]:
        return sorted(j for j, status in self.status.items() if status != JobStatus.CANCELLED)

    def schedule(self, uid: str) -> None:
        """A user with nothing running goes to the back of the rotation if work
        waits; a paused one to the paused place."""
        if self.pending[uid]:
            if uid in self.paused:
                self.parked.add(uid)
            else:
                self.rotation.append(uid)

    def enqueue(self, uid: str, items: list[tuple[str, str, str | None]]):
        """[(job id, created)] as enqueue answers; QueueFull, and no change, when over the cap."""
        seen: dict[str, str] = {}
        answers, new = [], []
        for index, (jid, data, key) in enumerate(items):
            earlier = key and (seen.get(key) or self.idempotency.get((uid, key)))
            if earlier:
                answers.append((earlier, False))
                continue
            if len(self.pending[uid]) + len(new) + 1 > MAX_PENDING:
                raise QueueFull(index)
            if key:
                seen[key] = jid
            new.append((jid, data, key))
            answers.append((jid, True))
        for jid, data, key in new:
            self.jobs[jid] = (uid, data)
            self.status[jid], self.attempts[jid] = JobStatus.QUEUED, 0
            self.pending[uid].append(jid)
            if key:
                self.idempotency[(uid, key)] = jid
        if new and self.place(uid) == "idle":
            self.schedule(uid)
        return answers

    def claim(self, n: int, owner: str, now: int) -> list[Claimed]:
        """Users whose retry is due rejoin the rotation (earliest first), then up
        to n users at its front each start their oldest job."""
        for _, uid in sorted((due, uid) for uid, due in self.delayed.items() if due <= now):
            del self.delayed[uid]
            self.schedule(uid)
        claimed = []
        while len(claimed) < n and self.rotation:
            uid = self.rotation.pop(0)
            jid = self.pending[uid].pop(0)
            self.attempts[jid] += 1
            self.status[jid] = JobStatus.PROCESSING
            token = f"{owner}:{self.attempts[jid]}"
            if self.rounds[jid]:  # a redriven job's lease is not an earlier run's
                token += f".{self.rounds[jid]}"
            lease = Claimed(uid, jid, self.jobs[jid][1], self.attempts[jid], token)
            self.running[uid] = lease
            self.leases.append(lease)
            claimed.append(lease)
        return claimed

    def end(self, jid: str, status: JobStatus) -> None:
        assert jid not in self.terminal, f"{jid} ended twice: {self.terminal[jid]}, {status}"
        self.terminal[jid] = self.status[jid] = status

    def finish_for_good(self, lease: Claimed, status: JobStatus) -> None:
        uid, jid = lease.user_id, lease.job_id
        self.end(jid, status)
        self.ready[uid].append(jid)
        self.events[uid].append(jid)
        del self.running[uid]
        self.schedule(uid)

    def fail_attempt(self, lease: Claimed, back_off: str, due: int | None) -> str:
        """An error or a lost lease: retry (due is when, if it waits) or fail for good."""
        uid, jid = lease.user_id, lease.job_id
        if self.attempts[jid] >= MAX_ATTEMPTS:
            self.finish_for_good(lease, JobStatus.FAILED)
            return "failed"
        del self.running[uid]
        self.status[jid] = JobStatus.QUEUED
        self.pending[uid].insert(0, jid)
        if back_off_ms(back_off, self.attempts[jid]) <= 0:
            self.schedule(uid)
        else:
            assert due is not None, f"{uid} should wait for the retry of {jid}"
            self.delayed[uid] = due
        return "retry"

    def release(self, lease: Claimed) -> None:
        uid, jid = lease.user_id, lease.job_id
        del self.running[uid]
        self.attempts[jid] -= 1
        self.status[jid] = JobStatus.QUEUED
        self.pending[uid].insert(0, jid)
        if uid in self.paused:
            self.parked.add(uid)
        else:
            self.rotation.insert(0, uid)

    def cancel(self, uid: str, jid: str) -> tuple[str, JobStatus] | None:
        """None for a job not the user's; NotQueued, and no change, unless it waits."""
        if self.jobs.get(jid, (None,))[0] != uid:
            return None
        if self.status[jid] != JobStatus.QUEUED:
            raise NotQueued(self.status[jid].value)
        pending = self.pending[uid]
        was_head = pending[0] == jid
        pending.remove(jid)
        self.end(jid, JobStatus.CANCELLED)
        if uid in self.rotation and not pending:
            self.rotation.remove(uid)
        elif uid in self.parked and not pending:
            self.parked.remove(uid)
        elif uid in self.delayed and was_head:  # the next job need not wait for that retry
            del self.delayed[uid]
            self.schedule(uid)
        return jid, JobStatus.CANCELLED

    def dequeue(self, uid: str) -> str | None:
        return self.ready[uid].pop(0) if self.ready[uid] else None

    def pause(self, uid: str) -> None:
        """Out of the rotation; a delayed or running user is parked when its turn comes."""
        self.paused.add(uid)
        if uid in self.rotation:
            self.rotation.remove(uid)
            self.parked.add(uid)

    def resume(self, uid: str) -> None:
        self.paused.discard(uid)
        if uid in self.parked:
            self.parked.remove(uid)
            self.rotation.append(uid)

    def retry(self, jid: str) -> JobStatus | None:
        """Redrive: a FAILED or CANCELLED job to the back of its user's queue,
        attempts 0. The status that refused it, or None when done."""
        uid = self.jobs[jid][0]
        if self.status[jid] not in (JobStatus.FAILED, JobStatus.CANCELLED):
            return self.status[jid]
        if jid in self.ready[uid]:
            self.ready[uid].remove(jid)
        del self.terminal[jid]
        self.status[jid], self.attempts[jid] = JobStatus.QUEUED, 0
        self.rounds[jid] += 1
        self.pending[uid].append(jid)
        if self.place(uid) == "idle":
            self.schedule(uid)
        return None

    def purge(self, uid: str) -> int:
        jids, self.pending[uid] = self.pending[uid], []
        for jid in jids:
            self.end(jid, JobStatus.CANCELLED)
        if uid in self.rotation:
            self.rotation.remove(uid)
        self.delayed.pop(uid, None)
        self.parked.discard(uid)
        return len(jids)


@dataclass
class Snapshot:
    """The queue's shape as Redis holds it."""

    rotation: list[str]
    delayed: dict[str, int]
    leases: list[str]  # uid:jid
    marks: dict[str, str | None]
    pending: dict[str, list[str]]
    ready: dict[str, list[str]]
    jobs: dict[str, JobRecord]
    events: dict[str, list[str]]
    parked: set[str]
    counts: dict[str, int]  # the shard's counters: queued, processing
    backlog: dict[str, int]  # the shard's backlog set


class QueueMachine(RuleBasedStateMachine):
    """Drives Queue like the API and workers do; after each step Redis must match
    the model, and each user must be in exactly one place."""

    def __init__(self, settings_factory):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        prefix = f"t{uuid.uuid4().hex[:10]}"
        settings = {name: settings_factory(queue_prefix=prefix, queue_shards=1,
                                           queue_max_attempts=MAX_ATTEMPTS,
                                           queue_retry_base_seconds=seconds)
                    for name, seconds in BACK_OFFS.items()}
        self.redis = connection.client(settings["none"].redis_url)
        self.queues = {name: Queue.from_settings(self.redis, s) for name, s in settings.items()}
        self.queue = self.queues["none"]
        self.base = self.queue.keys.base(0)
        self.model = Model()
        self.job_ids = itertools.count(1)

    def teardown(self):
        self.run(self.redis.aclose())
        self.loop.close()

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def now(self) -> int:
        """Redis's clock in ms, the one the scripts use."""
        seconds, micros = self.run(self.redis.time())
        return seconds * 1000 + micros // 1000

    def now_after_short_back_offs(self) -> int:
        """The time once every short back-off is over: a claim then promotes
        exactly the users the model says are due (the short ones, never the long)."""
        start = self.now()
        soon = max((due for due in self.model.delayed.values() if due < start + SOON_MS),
                   default=0)
        return wait_until(lambda: (t := self.now()) >= soon and t, interval=0.002,
                          message="the short back-offs to pass")

    def retry_due(self, lease: Claimed, back_off: str, before: int) -> int | None:
        """When Redis says the lease's job will be retried, checked against its back-off."""
        due = self.observe().delayed.get(lease.user_id)
        if due is None:
            return None
        delay = back_off_ms(back_off, lease.attempts)
        assert before + delay <= due <= self.now() + delay, (before, delay, due)
        return due

    def check_batch(self, batch, claimed: list[Claimed]) -> None:
        assert batch.jobs == claimed, "a claim takes the heads of the users at the rotation's front"
        assert (batch.next_due_ms == -1) == (not self.model.delayed)

    def pick(self, data, leases: list[Claimed], label: str) -> Claimed:
        return data.draw(st.sampled_from(sorted(leases, key=lambda x: (x.user_id, x.token))),
                         label=label)

    # ---- the API's calls ----

    @rule(uid=st.sampled_from(USERS),
          keys=st.lists(st.none() | st.sampled_from(["k1", "k2", "k3"]), min_size=1, max_size=2))
    def enqueue(self, uid, keys):
        items = []
        for key in keys:
            jid = f"j{next(self.job_ids)}"
            items.append((jid, f"data of {jid}", key))
        try:
            answers = self.model.enqueue(uid, items)
        except QueueFull as full:
            with pytest.raises(QueueFull) as err:
                self.run(self.queue.enqueue(uid, items, MAX_PENDING))
            assert err.value.index == full.index
            return
        done = self.run(self.queue.enqueue(uid, items, MAX_PENDING))
        assert [(e.job_id, e.created) for e in done] == answers

    @precondition(lambda self: self.model.not_cancelled())
    @rule(data=st.data())
    def cancel(self, data):
        """By its owner, a job not cancelled yet (another's job, a missing or a
        cancelled one are tested above)."""
        jid = data.draw(st.sampled_from(self.model.not_cancelled()), label="job")
        uid = self.model.jobs[jid][0]
        try:
            expected = self.model.cancel(uid, jid)
        except NotQueued as conflict:
            with pytest.raises(NotQueued) as err:
                self.run(self.queue.cancel(uid, jid))
            assert err.value.status == conflict.status
            return
        record = self.run(self.queue.cancel(uid, jid))
        assert (record and (record.id, record.status)) == expected

    # ---- an operator's calls ----

    @rule(uid=st.sampled_from(USERS))
    def pause(self, uid):
        assert self.run(self.queue.set_limits(uid, paused=True)).paused is True
        self.model.pause(uid)

    @rule(uid=st.sampled_from(USERS))
    def resume(self, uid):
        assert self.run(self.queue.set_limits(uid, paused=False)).paused is False
        self.model.resume(uid)

    @precondition(lambda self: self.model.jobs)
    @rule(data=st.data())
    def retry(self, data):
        jid = data.draw(st.sampled_from(sorted(self.model.jobs)), label="job")
        uid = self.model.jobs[jid][0]
        refused = self.model.retry(jid)
        if refused:
            with pytest.raises(NotFinished) as err:
                self.run(self.queue.retry(uid, jid))
            assert err.value.status == refused.value
            return
        retried = self.run(self.queue.retry(uid, jid))
        assert (retried.job.status, retried.job.attempts) == (JobStatus.QUEUED, 0)
        assert retried.before.status in (JobStatus.FAILED, JobStatus.CANCELLED)

    @rule(uid=st.sampled_from(USERS), batch=st.integers(1, 3))
    def purge(self, uid, batch):
        assert self.run(self.queue.purge(uid, batch)) == self.model.purge(uid)

    @precondition(lambda self: any(self.model.ready.values()))
    @rule(uid=st.sampled_from(USERS))
    def dequeue(self, uid):
        record = self.run(self.queue.dequeue(uid))
        assert (record and record.id) == self.model.dequeue(uid), "finished jobs in order, once"

    # ---- the workers' calls ----

    @rule(n=st.integers(1, 3), owner=st.sampled_from(OWNERS))
    def claim(self, n, owner):
        now = self.now_after_short_back_offs()
        batch = self.run(self.queue.claim(self.base, n, owner, LEASE))
        self.check_batch(batch, self.model.claim(n, owner, now))

    @precondition(lambda self: self.model.running)
    @rule(data=st.data(), ok=st.booleans(), back_off=st.sampled_from(sorted(BACK_OFFS)),
          claim_n=st.integers(0, 2), owner=st.sampled_from(OWNERS))
    def finish(self, data, ok, back_off, claim_n, owner):
        lease = self.pick(data, list(self.model.running.values()), "lease")
        now = self.now_after_short_back_offs()
        batch = self.run(self.queues[back_off].finish(
            lease, ok, "result" if ok else "error", claim_n=claim_n, owner=owner,
            lease_seconds=LEASE))
        if ok:
            self.model.finish_for_good(lease, JobStatus.COMPLETED)
            verdict = "completed"
        else:
            verdict = self.model.fail_attempt(lease, back_off,
                                              self.retry_due(lease, back_off, now))
        assert batch.verdict == verdict
        self.check_batch(batch, self.model.claim(claim_n, owner, now))

    @precondition(lambda self: self.model.running)
    @rule(data=st.data(), back_off=st.sampled_from(sorted(BACK_OFFS)))
    def let_a_lease_expire(self, data, back_off):
        """Its worker stops renewing: a zero-length lease, then the reclaim every worker runs."""
        lease = self.pick(data, list(self.model.running.values()), "lease")
        queue = self.queues[back_off]
        assert self.run(queue.heartbeat([lease], 0)) == []
        before = self.now()
        reclaimed = wait_until(lambda: self.run(queue.reclaim(self.base)), interval=0.002,
                               message="the lease to expire")
        assert reclaimed == 1, "only the lease that ran out"
        self.model.fail_attempt(lease, back_off, self.retry_due(lease, back_off, before))

    @precondition(lambda self: self.model.running)
    @rule(data=st.data())
    def release(self, data):
        lease = self.pick(data, list(self.model.running.values()), "lease")
        assert self.run(self.queue.release(lease)) is True
        self.model.release(lease)

    @precondition(lambda self: self.model.leases)
    @rule(data=st.data())
    def heartbeat(self, data):
        leases = data.draw(st.lists(st.sampled_from(self.model.leases), max_size=4),
                           label="leases")
        lost = self.run(self.queue.heartbeat(leases, LEASE))
        assert lost == [x.member for x in leases if not self.model.holds(x)]

    @precondition(lambda self: self.model.lost_leases())
    @rule(data=st.data(), ok=st.booleans(), claim_n=st.integers(0, 2),
          owner=st.sampled_from(OWNERS))
    def finish_a_lost_lease(self, data, ok, claim_n, owner):
        lease = self.pick(data, self.model.lost_leases(), "lost lease")
        now = self.now_after_short_back_offs()
        batch = self.run(self.queue.finish(lease, ok, "late", claim_n=claim_n, owner=owner,
                                           lease_seconds=LEASE))
        assert batch.verdict == "stale", "a lost lease records nothing"
        self.check_batch(batch, self.model.claim(claim_n, owner, now))

    @precondition(lambda self: self.model.lost_leases())
    @rule(data=st.data())
    def release_a_lost_lease(self, data):
        lease = self.pick(data, self.model.lost_leases(), "lost lease")
        assert self.run(self.queue.release(lease)) is False

    # ---- after every step ----

    def observe(self) -> Snapshot:
        return self.run(self._observe())

    async def _observe(self) -> Snapshot:
        """The one place the machine reads Redis keys itself (named in engine/keys.py)."""
        base = self.base
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lrange(Keys.rotation(base), 0, -1)
            pipe.zrange(Keys.delayed(base), 0, -1, withscores=True)
            pipe.zrange(Keys.leases(base), 0, -1)
            pipe.smembers(Keys.paused(base))
            pipe.hgetall(Keys.counts(base))
            pipe.zrange(Keys.backlog(base), 0, -1, withscores=True)
            for uid in USERS:
                pipe.get(Keys.state(base, uid))
                pipe.lrange(Keys.pending(base, uid), 0, -1)
                pipe.lrange(Keys.ready(base, uid), 0, -1)
            rotation, delayed, leases, parked, counts, backlog, *per_user = await pipe.execute()
        jobs, events = {}, {}
        for uid in USERS:
            jobs |= await self.queue.get_many(
                uid, [jid for jid, (owner, _) in self.model.jobs.items() if owner == uid])
            events[uid] = [r.id for _, r in await self.queue.events_after(uid, "0-0")]
        return Snapshot(
            # the due-time index holds `uid:jid` of a retry waiting out its back-off
            rotation=rotation, delayed={m.split(":", 1)[0]: int(due) for m, due in delayed},
            leases=leases,
            marks=dict(zip(USERS, per_user[0::3])), pending=dict(zip(USERS, per_user[1::3])),
            ready=dict(zip(USERS, per_user[2::3])), jobs=jobs, events=events, parked=parked,
            counts={k: int(v) for k, v in counts.items()},
            backlog={u: int(n) for u, n in backlog})

    @invariant()
    def each_user_is_in_exactly_one_place(self):
        seen = self.observe()
        leases = Counter(member.split(":", 1)[0] for member in seen.leases)
        processing = Counter(r.user_id for r in seen.jobs.values()
                             if r.status == JobStatus.PROCESSING)
        for uid in USERS:
            assert seen.rotation.count(uid) <= 1, f"{uid} twice in the rotation"
            assert leases[uid] <= 1 and processing[uid] <= 1, f"{uid} runs two jobs at once"
            assert leases[uid] == processing[uid], f"{uid}: a lease without a running job"
            places = [place for place, here in (("rotation", uid in seen.rotation),
                                                ("delayed", uid in seen.delayed),
                                                ("paused", uid in seen.parked),
                                                ("running", leases[uid] == 1)) if here]
            assert len(places) <= 1, f"{uid} is in {places}"
            place = places[0] if places else "idle"
            assert seen.marks[uid] == PLACE_MARKS[place], f"{uid} is {place}: {seen.marks[uid]}"
            if place == "idle":
                assert seen.pending[uid] == [], f"{uid} is idle with jobs waiting"
            if place in ("rotation", "delayed", "paused"):
                assert seen.pending[uid], f"{uid} is in the {place} with nothing waiting"
            if place == "delayed":
                assert seen.jobs[seen.pending[uid][0]].attempts >= 1, "only a retry waits"

    @invariant()
    def redis_holds_what_the_model_holds(self):
        seen, model = self.observe(), self.model
        assert seen.rotation == model.rotation
        assert seen.delayed == model.delayed
        assert sorted(seen.leases) == sorted(x.member for x in model.running.values())
        assert seen.parked == model.parked
        assert seen.pending == model.pending
        assert seen.ready == model.ready
        assert seen.events == model.events, "each finished job announced once"
        assert {jid: (r.status, r.attempts) for jid, r in seen.jobs.items()} == {
            jid: (model.status[jid], model.attempts[jid]) for jid in model.jobs}, \
            "a job that ended keeps its one terminal state"

    @invariant()
    def the_counters_say_what_the_lists_and_leases_hold(self):
        """Kept by the scripts themselves, never recounted here (the recount
        of maintenance would hide a script that forgets one)."""
        seen = self.observe()
        queued = {uid: len(jids) for uid, jids in seen.pending.items() if jids}
        assert seen.backlog == queued
        assert seen.counts.get("queued", 0) == sum(queued.values())


def test_each_user_is_in_exactly_one_place_whatever_the_calls(settings_factory):
    run_state_machine_as_test(lambda: QueueMachine(settings_factory), settings=MACHINE_SETTINGS)


# ---- what operators read and do (CONTRACT §9) ----

async def test_a_corrupted_counter_and_backlog_set_are_recounted_by_maintenance(queue, caplog):
    from workers.worker import Worker, WorkerConfig

    ann, bob = users(2)
    await enqueue(queue, ann, "1", "2", "3")
    await enqueue(queue, bob, "1")
    [running, _] = await claim(queue)
    base = queue.keys.base(0)
    assert (await queue.totals()).queued == 2
    assert await queue.backlog() == [(ann, 2)], "bob's one job runs: nothing of his waits"
    # something writes behind the scripts' back
    await queue.redis.hset(Keys.counts(base), "queued", 99)
    await queue.redis.zadd(Keys.backlog(base), {ann: 7, "ghost": 3})
    assert (await queue.totals()).queued == 99

    worker = Worker(queue, lambda data: data, WorkerConfig())
    assert await worker.recount() == 3, "queued, ann's score, the ghost"

    totals = await queue.totals()
    assert (totals.queued, totals.processing) == (2, 2)
    assert await queue.backlog() == [(ann, 2)]
    assert "corrected 3 counter(s)" in caplog.text
    assert await worker.recount() == 0, "nothing left to correct"
    await finish(queue, running)
    assert (await queue.totals()).processing == 1, "a lease per running job"
    await enqueue(queue, bob, "2")
    assert (await queue.totals()).queued == 3, "the scripts count on from the truth"


async def test_a_paused_users_jobs_do_not_start_until_resumed(queue):
    ann, bob = users(2)
    [a1, a2] = await enqueue(queue, ann, "1", "2")
    [running] = await claim(queue)

    limits = await queue.set_limits(ann, paused=True)
    assert (limits.paused, limits.concurrency) == (True, None), "the others keep their default"
    await finish(queue, running, claim_n=5)  # the running job ends; the next must not start
    [b1] = await enqueue(queue, bob, "1")
    assert ids(await claim(queue)) == [b1], "bob runs, ann waits"
    await enqueue(queue, ann, "3")
    assert await claim(queue) == [], "enqueue works, nothing starts"
    assert (await queue.totals()).users_waiting == 0, "a paused user is not waiting to start"

    assert (await queue.set_limits(ann, paused=False, weight=3)).weight == 3
    assert ids(await claim(queue)) == [a2], "resumed: back in the rotation"


async def test_retry_puts_a_failed_job_at_the_back_and_it_runs_again(make_queue):
    queue = make_queue(queue_max_attempts=1)
    [ann] = users(1)
    [failing, other] = await enqueue(queue, ann, "x", "y")
    [job] = await claim(queue)
    assert (await finish(queue, job, ok=False, value="boom")).verdict == "failed"

    retried = await queue.retry(ann, failing)

    assert (retried.before.status, retried.before.error) == (JobStatus.FAILED, "boom")
    assert (retried.job.status, retried.job.attempts, retried.job.error) == (
        JobStatus.QUEUED, 0, None)
    [run] = await claim(queue)
    assert run.job_id == other, "at the back of the user's queue"
    [again] = (await finish(queue, run, claim_n=1)).jobs
    assert (again.job_id, again.attempts) == (failing, 1)
    assert again.token != job.token, "the first run's lease cannot finish the second"
    assert (await finish(queue, job)).verdict == "stale"
    await finish(queue, again, value="fine")
    assert [r.id for _, r in await queue.events_after(ann, "0-0")] == [failing, other, failing]
    assert [(await queue.dequeue(ann)).id for _ in range(2)] == [other, failing], \
        "the FAILED run left the ready list; the new outcome is ready once"
    with pytest.raises(NotFinished) as err:
        await queue.retry(ann, other)
    assert err.value.status == "COMPLETED", "only a FAILED or CANCELLED job is retried"

async def test_retry_re_creates_a_job_redis_has_forgotten_from_its_history(queue):
    [ann] = users(1)
    [jid] = await enqueue(queue, ann, "x")
    await queue.cancel(ann, jid)
    history = await queue.get(ann, jid)
    await queue.redis.delete(Keys.job(queue.keys.base(0), jid))  # its retention ran out
    assert await queue.retry(ann, jid) is None, "without the history: not found"

    retried = await queue.retry(ann, jid, history)

    assert retried.before is None
    assert retried.job.request_data == "x" and retried.job.version > history.version
    assert (await claim(queue))[0].job_id == jid


async def test_purge_cancels_every_queued_job_in_batches(queue):
    ann, bob = users(2)
    await enqueue(queue, ann, *map(str, range(7)))
    [bob1] = await enqueue(queue, bob, "1")
    [running] = await claim(queue, n=1)

    assert await queue.purge(ann, batch=3) == 6
    assert await queue.purge(ann) == 0
    assert (await queue.stats(ann)).queued == 0
    assert ids(await claim(queue)) == [bob1], "ann left the rotation"
    assert (await queue.get(ann, f"{ann}-6")).status == JobStatus.CANCELLED
    assert (await finish(queue, running)).verdict == "completed", "the running job is not purged"


async def test_throughput_is_kept_in_10_second_buckets(make_queue):
    queue = make_queue(queue_max_attempts=1)
    ann, bob = users(2)
    await enqueue(queue, ann, "1", "2", "3")
    await enqueue(queue, bob, "1")
    a, b = await claim(queue)
    await finish(queue, a)
    await finish(queue, b, ok=False)

    points = await queue.throughput(15)

    assert len(points) == 90
    assert [p.at - points[0].at for p in points] == list(range(0, 900, 10)), "oldest first"
    now = (await queue.redis.time())[0]
    assert points[-1].at <= now < points[-1].at + 10, "the last one is now's"
    assert sum(p.enqueued for p in points) == 4
    assert (sum(p.completed for p in points), sum(p.failed for p in points)) == (1, 1)
    assert points[-1].queued == 2, "ann's two waiting jobs: the depth carries on to now"
    assert points[0].queued == 0, "nothing was queued before the first enqueue"
    bucket = Keys.throughput(queue.keys.base(0), points[-1].at // 10)
    assert 3600 < await queue.redis.ttl(bucket) <= 3900, "kept for an hour, then dropped"
