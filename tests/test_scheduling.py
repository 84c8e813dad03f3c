"""CONTRACT §7 in the engine: lanes per ordering key, per-user concurrency,
priorities, weights, runAt, pause and start rate, against a real Redis.

Each test drives the Lua scripts through the Queue methods a worker and the
API call (claim, finish, cancel, set_limits), as tests/test_engine.py does.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

from engine.keys import Keys
from engine.queue import NewJob, Queue
from tests.test_engine import LEASE, claim, eventually, finish, ids, make_queue, queue, redis, users  # noqa: F401


def job(uid: str, name: str, key: str | None = None, priority: int = 0,
        run_at_ms: int | None = None) -> NewJob:
    return NewJob(f"{uid}-{name}", name, None, key, priority, run_at_ms)


async def add(queue: Queue, uid: str, *jobs: NewJob) -> list[str]:
    return [e.job_id for e in await queue.enqueue(uid, list(jobs), 1000)]


async def redis_ms(queue: Queue) -> int:
    seconds, micros = await queue.redis.time()
    return seconds * 1000 + micros // 1000


# ---- lanes and concurrency ----

async def test_keys_run_side_by_side_up_to_the_users_concurrency_one_job_per_key(queue):
    [ann] = users(1)
    await queue.set_limits(ann, concurrency=2)
    a1, b1, a2, c1 = await add(queue, ann, job(ann, "a1", "a"), job(ann, "b1", "b"),
                               job(ann, "a2", "a"), job(ann, "c1", "c"))

    first = await claim(queue)
    assert ids(first) == [a1, b1], "two keys at once, in due order, never a2 beside a1"
    assert await claim(queue) == [], "concurrency 2: the third key waits"
    assert (await queue.stats(ann)).processing == 2

    [nxt] = (await finish(queue, first[0], claim_n=5)).jobs
    assert nxt.job_id in (a2, c1), "a1's end frees one slot; b runs, so not b"
    [last] = (await finish(queue, first[1], claim_n=5)).jobs
    assert {nxt.job_id, last.job_id} == {a2, c1}, "b1's end frees the other"


async def test_without_keys_a_higher_concurrency_changes_nothing(make_queue):
    queue = make_queue(queue_user_concurrency=3)
    [ann] = users(1)
    j1, j2 = await add(queue, ann, job(ann, "1"), job(ann, "2"))
    assert ids(await claim(queue)) == [j1]
    assert await claim(queue) == [], "one default key: one job at a time, as in §4"


async def test_a_lower_concurrency_applies_from_the_next_start(queue):
    [ann] = users(1)
    await queue.set_limits(ann, concurrency=3)
    await add(queue, ann, *(job(ann, f"{k}{i}", k) for i in (1, 2) for k in "abc"))
    assert len(await claim(queue, n=2)) == 2
    await queue.set_limits(ann, concurrency=2)
    assert await claim(queue) == [], "two run, the new limit is two"


# ---- priority ----

async def test_priority_picks_the_key_at_a_users_turn_but_never_overtakes_another_user(make_queue):
    queue = make_queue(queue_user_concurrency=1)
    ann, bob = users(2)
    low, high, mid = await add(queue, ann, job(ann, "low", "x", -5), job(ann, "high", "y", 50),
                               job(ann, "mid", "z", 10))
    [bob1] = await add(queue, bob, job(bob, "1"))

    assert ids(await claim(queue, n=5)) == [high, bob1], "ann's best key first, then bob's turn"
    running = (await queue.get(ann, high))
    assert running.priority == 50 and running.ordering_key == "y"


async def test_priority_never_reorders_one_key(queue):
    [ann] = users(1)
    first, urgent = await add(queue, ann, job(ann, "first", "k", -10), job(ann, "urgent", "k", 90))
    [run] = await claim(queue)
    assert run.job_id == first
    assert ids((await finish(queue, run, claim_n=1)).jobs) == [urgent]


# ---- runAt ----

async def test_run_at_waits_without_holding_back_its_key_then_starts_when_due(queue):
    [ann] = users(1)
    now = await redis_ms(queue)
    later, sooner = await add(queue, ann, job(ann, "later", "k", run_at_ms=now + 400),
                              job(ann, "sooner", "k"))

    stats = await queue.stats(ann)
    assert (stats.queued, stats.scheduled) == (2, 1)
    [run] = await claim(queue)
    assert run.job_id == sooner, "the scheduled job does not block its key's due work"
    assert (await queue.get(ann, later)).scheduled
    batch = await finish(queue, run, claim_n=1)
    assert batch.jobs == [] and 0 < batch.next_due_ms <= 400, "workers learn when to look again"

    [due] = await eventually(lambda: claim(queue), "the runAt to come")
    assert due.job_id == later
    assert await redis_ms(queue) >= now + 400
    assert (await queue.stats(ann)).scheduled == 0


async def test_a_scheduled_job_can_be_cancelled_and_a_past_run_at_means_now(queue):
    [ann] = users(1)
    now = await redis_ms(queue)
    ahead, past = await add(queue, ann, job(ann, "ahead", run_at_ms=now + 3_600_000),
                            job(ann, "past", run_at_ms=now - 60_000))
    assert ids(await claim(queue)) == [past]
    assert (await queue.cancel(ann, ahead)).status.value == "CANCELLED"
    stats = await queue.stats(ann)
    assert (stats.queued, stats.scheduled) == (0, 0)
    assert (await queue.shape()).delayed == 0, "its entry left the due-time index"


# ---- weights ----

async def test_weights_split_starts_3_to_1_on_one_slot(queue):
    heavy, light = users(2)
    await queue.set_limits(heavy, weight=3)
    await add(queue, heavy, *(job(heavy, str(i)) for i in range(400)))
    await add(queue, light, *(job(light, str(i)) for i in range(400)))

    starts = Counter()
    [running] = await claim(queue, n=1)
    for _ in range(400):
        starts[running.user_id] += 1
        [running] = (await finish(queue, running, claim_n=1)).jobs

    assert abs(starts[heavy] / starts[light] - 3) <= 0.3, starts


async def test_equal_weights_are_plain_round_robin(queue):
    ann, bob, cy = users(3)
    for uid in (ann, bob, cy):
        await add(queue, uid, *(job(uid, str(i)) for i in range(3)))
    order = []
    [running] = await claim(queue, n=1)
    for _ in range(8):
        order.append(running.user_id)
        [running] = (await finish(queue, running, claim_n=1)).jobs
    assert order == [ann, bob, cy] * 2 + [ann, bob]


# ---- start rate and pause ----

async def test_a_start_rate_holds_back_only_its_user_who_waits_in_the_due_time_index(queue):
    ann, bob = users(2)
    await queue.set_limits(ann, starts_per_minute=600)  # one start per 100 ms
    await add(queue, ann, job(ann, "1"), job(ann, "2"))
    await add(queue, bob, job(bob, "1"), job(bob, "2"))
    first = await claim(queue)
    for j in first:
        await finish(queue, j)
    t0 = await redis_ms(queue)

    quick = await claim(queue)
    assert [j.user_id for j in quick] == [bob], "ann's next start must wait; bob's not"
    base = queue.keys.base(0)
    assert await queue.redis.zscore(Keys.delayed(base), ann) is not None
    assert ann not in await queue.redis.lrange(Keys.rotation(base), 0, -1), "nobody spins on ann"
    [later] = await eventually(lambda: claim(queue), "ann's rate to allow a start")
    assert later.user_id == ann
    started = (await queue.get(ann, later.job_id)).started_at.timestamp() * 1000
    first_start = (await queue.get(ann, f"{ann}-1")).started_at.timestamp() * 1000
    assert started - first_start >= 100 and t0 >= first_start


# ---- self-healing ----

async def test_a_leaked_running_lane_is_healed_by_maintenance(queue, caplog):
    from workers.worker import Worker, WorkerConfig

    [ann] = users(1)
    await add(queue, ann, job(ann, "1"))
    base = queue.keys.base(0)
    # a slot counter that says a lane runs when none does: the user would be wedged
    await queue.redis.hset(Keys.busy(base, ann), "", "ghost")
    await queue.redis.lrem(Keys.rotation(base), 1, ann)
    await queue.redis.set(Keys.state(base, ann), "a")
    assert await claim(queue) == []

    worker = Worker(queue, lambda data: data, WorkerConfig())
    assert await worker.recount() >= 1
    assert "corrected" in caplog.text
    assert ids(await claim(queue)) == [f"{ann}-1"], "the user runs again"
    assert await worker.recount() == 0



async def test_limits_missing_from_the_shards_limited_set_are_found_again_by_maintenance(queue):
    """Scripts read a user's limits only when the shard's `limited` set says
    someone has them (the usual shard has none: nothing to read). Limits stored
    before that set existed, or a set lost, are healed by the recount."""
    from workers.worker import Worker, WorkerConfig

    ann, bob = users(2)
    await queue.set_limits(ann, concurrency=2)
    base = queue.keys.base(0)
    await queue.redis.delete(Keys.limited(base))  # as an older version left it
    await add(queue, ann, job(ann, "1", key="a"), job(ann, "2", key="b"))
    await add(queue, bob, job(bob, "1"))
    worker = Worker(queue, lambda data: data, WorkerConfig())
    assert await worker.recount() >= 1
    assert await queue.redis.sismember(Keys.limited(base), ann)
    started = await claim(queue, 10)
    assert sorted(ids(started)) == sorted([f"{ann}-1", f"{ann}-2", f"{bob}-1"]), \
        "ann's concurrency 2 applies again: both keys start"
    assert await worker.recount() == 0



async def test_a_redriven_job_redis_forgot_keeps_its_key_priority_and_run_at(queue):
    [ann] = users(1)
    run_at = await redis_ms(queue) - 1000  # stored on the job, due at once
    await add(queue, ann, job(ann, "1", key="k", priority=5, run_at_ms=run_at))
    await queue.cancel(ann, f"{ann}-1")
    history = await queue.get(ann, f"{ann}-1")
    await queue.redis.delete(Keys.job(queue.keys.base(0), f"{ann}-1"))  # its retention ran out

    again = (await queue.retry(ann, f"{ann}-1", history)).job

    assert (again.ordering_key, again.priority) == ("k", 5)
    assert again.run_at == history.run_at and again.run_at is not None
    assert ids(await claim(queue)) == [f"{ann}-1"], "its runAt is past: it runs now"


# ---- the state machine: §7 against a small model, checked after every step ----

import asyncio  # noqa: E402
import itertools  # noqa: E402

import hypothesis  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test)

from engine import connection  # noqa: E402
from engine.jobs import Claimed, JobStatus  # noqa: E402
from engine.queue import NotQueued  # noqa: E402

LANE_USERS = ("ann", "bob")
LANE_KEYS = ("", "a", "b")  # "": the default key
MAX_ATTEMPTS = 2
HOUR_MS = 3_600_000  # a runAt or a back-off this far ahead never falls due during a run
LANE_SETTINGS = hypothesis.settings(max_examples=40, stateful_step_count=30, deadline=None,
                                    database=None)


class LaneModel:
    """§7 in plain Python: what may start, and where each user must be."""

    def __init__(self):
        self.lanes = {u: {k: [] for k in LANE_KEYS} for u in LANE_USERS}  # due jobs, in order
        self.blocked = {u: set() for u in LANE_USERS}  # lanes whose head waits out a back-off
        self.scheduled = {u: set() for u in LANE_USERS}  # jobs whose runAt is ahead
        self.running = {u: {} for u in LANE_USERS}  # lane -> lease
        self.limits = {u: {"concurrency": 1, "weight": 1, "paused": False} for u in LANE_USERS}
        self.jobs: dict[str, dict] = {}  # jid -> uid, key, priority, status, attempts

    def startable(self, uid: str) -> list[str]:
        return [k for k, jobs in self.lanes[uid].items()
                if jobs and k not in self.running[uid] and k not in self.blocked[uid]]

    def has_room(self, uid: str) -> bool:
        return len(self.running[uid]) < self.limits[uid]["concurrency"]

    def can_start(self, uid: str) -> bool:
        return not self.limits[uid]["paused"] and self.has_room(uid) and bool(self.startable(uid))

    def queued(self, uid: str) -> int:
        return sum(map(len, self.lanes[uid].values())) + len(self.scheduled[uid])

    def place(self, uid: str) -> str | None:
        """The user's state mark: r rotation, p paused, a busy, d waiting for a due time."""
        if self.has_room(uid) and self.startable(uid):
            return "p" if self.limits[uid]["paused"] else "r"
        if self.running[uid]:
            return "a"
        return "d" if self.queued(uid) else None

    def allows(self, lease: Claimed) -> str | None:
        """Why the engine may not start this job now; None when it may."""
        uid, jid = lease.user_id, lease.job_id
        key, priority = self.jobs[jid]["key"], self.jobs[jid]["priority"]
        if not self.can_start(uid):
            return f"{uid} may not start anything"
        if key not in self.startable(uid) or self.lanes[uid][key][0] != jid:
            return f"{jid} is not the head of a startable lane"
        best = max(self.jobs[self.lanes[uid][k][0]]["priority"] for k in self.startable(uid))
        if priority != best:
            return f"{jid} (priority {priority}) before a head of priority {best}"
        return None

    def start(self, lease: Claimed) -> None:
        job = self.jobs[lease.job_id]
        self.lanes[lease.user_id][job["key"]].pop(0)
        self.running[lease.user_id][job["key"]] = lease
        job["status"], job["attempts"] = JobStatus.PROCESSING, job["attempts"] + 1
        assert lease.attempts == job["attempts"]

    def end(self, lease: Claimed, ok: bool, long_back_off: bool) -> str:
        uid, job = lease.user_id, self.jobs[lease.job_id]
        del self.running[uid][job["key"]]
        if ok:
            job["status"] = JobStatus.COMPLETED
            return "completed"
        if job["attempts"] >= MAX_ATTEMPTS:
            job["status"] = JobStatus.FAILED
            return "failed"
        job["status"] = JobStatus.QUEUED
        self.lanes[uid][job["key"]].insert(0, lease.job_id)
        if long_back_off:
            self.blocked[uid].add(job["key"])
        return "retry"

    def release(self, lease: Claimed) -> None:
        uid, job = lease.user_id, self.jobs[lease.job_id]
        del self.running[uid][job["key"]]
        job["status"], job["attempts"] = JobStatus.QUEUED, job["attempts"] - 1
        self.lanes[uid][job["key"]].insert(0, lease.job_id)

    def cancel(self, jid: str) -> None:
        job = self.jobs[jid]
        uid, key = job["uid"], job["key"]
        if job["status"] != JobStatus.QUEUED:
            raise NotQueued(job["status"].value)
        job["status"] = JobStatus.CANCELLED
        if jid in self.scheduled[uid]:
            self.scheduled[uid].remove(jid)
            return
        if self.lanes[uid][key][0] == jid:
            self.blocked[uid].discard(key)
        self.lanes[uid][key].remove(jid)

    def running_leases(self) -> list[Claimed]:
        return sorted((x for u in LANE_USERS for x in self.running[u].values()),
                      key=lambda x: x.token + x.job_id)


class LaneMachine(RuleBasedStateMachine):
    """Drives Queue with keys, priorities, runAt and limits; after each step the
    engine's choices must be ones §7 allows and each user in exactly one place."""

    def __init__(self, settings_factory):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        prefix = f"t{uuid.uuid4().hex[:10]}"
        made = {name: settings_factory(queue_prefix=prefix, queue_shards=1,
                                       queue_max_attempts=MAX_ATTEMPTS,
                                       queue_retry_base_seconds=seconds)
                for name, seconds in (("none", 0), ("long", HOUR_MS / 1000))}
        self.redis = connection.client(made["none"].redis_url)
        self.queues = {name: Queue.from_settings(self.redis, s) for name, s in made.items()}
        self.queue = self.queues["none"]
        self.base = self.queue.keys.base(0)
        self.model = LaneModel()
        self.ids = itertools.count(1)

    def teardown(self):
        self.loop.run_until_complete(self.redis.aclose())
        self.loop.close()

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def check_claimed(self, jobs: list[Claimed], n: int) -> None:
        for lease in jobs:
            why = self.model.allows(lease)
            assert why is None, why
            self.model.start(lease)
        if len(jobs) < n:
            stuck = [u for u in LANE_USERS if self.model.can_start(u)]
            assert not stuck, f"{stuck} could start but the claim took {len(jobs)} of {n}"

    @rule(uid=st.sampled_from(LANE_USERS), key=st.sampled_from(LANE_KEYS),
          priority=st.sampled_from([-5, 0, 0, 7]), when=st.sampled_from(["now", "past", "later"]))
    def enqueue(self, uid, key, priority, when):
        jid = f"j{next(self.ids)}"
        now = int(time.time() * 1000)
        run_at = {"now": None, "past": now - 60_000, "later": now + HOUR_MS}[when]
        [done] = self.run(self.queue.enqueue(uid, [NewJob(jid, jid, None, key, priority, run_at)],
                                             1000))
        assert done.created
        self.model.jobs[jid] = {"uid": uid, "key": key, "priority": priority,
                                "status": JobStatus.QUEUED, "attempts": 0}
        if when == "later":
            self.model.scheduled[uid].add(jid)
        else:
            self.model.lanes[uid][key].append(jid)

    @rule(n=st.integers(1, 4))
    def claim(self, n):
        batch = self.run(self.queue.claim(self.base, n, "w", LEASE))
        self.check_claimed(batch.jobs, n)

    @precondition(lambda self: self.model.running_leases())
    @rule(data=st.data(), ok=st.booleans(), back_off=st.sampled_from(["none", "long"]),
          claim_n=st.integers(0, 2))
    def finish(self, data, ok, back_off, claim_n):
        lease = data.draw(st.sampled_from(self.model.running_leases()), label="lease")
        batch = self.run(self.queues[back_off].finish(
            lease, ok, "r", claim_n=claim_n, owner="w", lease_seconds=LEASE))
        assert batch.verdict == self.model.end(lease, ok, back_off == "long")
        self.check_claimed(batch.jobs, claim_n)

    @precondition(lambda self: self.model.running_leases())
    @rule(data=st.data(), back_off=st.sampled_from(["none", "long"]))
    def let_a_lease_expire(self, data, back_off):
        lease = data.draw(st.sampled_from(self.model.running_leases()), label="lease")
        queue = self.queues[back_off]
        self.run(queue.heartbeat([lease], 0))
        deadline = time.monotonic() + 10
        while not self.run(queue.reclaim(self.base)):
            assert time.monotonic() < deadline, "the lease never expired"
        self.model.end(lease, False, back_off == "long")

    @precondition(lambda self: self.model.running_leases())
    @rule(data=st.data())
    def release(self, data):
        lease = data.draw(st.sampled_from(self.model.running_leases()), label="lease")
        assert self.run(self.queue.release(lease)) is True
        self.model.release(lease)

    @precondition(lambda self: self.model.jobs)
    @rule(data=st.data())
    def cancel(self, data):
        jid = data.draw(st.sampled_from(sorted(self.model.jobs)), label="job")
        uid = self.model.jobs[jid]["uid"]
        try:
            self.model.cancel(jid)
        except NotQueued as conflict:
            try:
                self.run(self.queue.cancel(uid, jid))
            except NotQueued as err:
                assert err.status == conflict.status
            else:
                raise AssertionError(f"{jid} cancelled while {conflict.status}")
            return
        assert self.run(self.queue.cancel(uid, jid)).status == JobStatus.CANCELLED

    @rule(uid=st.sampled_from(LANE_USERS), concurrency=st.none() | st.integers(1, 3),
          weight=st.none() | st.integers(1, 3), paused=st.none() | st.booleans())
    def set_limits(self, uid, concurrency, weight, paused):
        self.run(self.queue.set_limits(uid, concurrency=concurrency, weight=weight,
                                       paused=paused))
        for name, value in (("concurrency", concurrency), ("weight", weight),
                            ("paused", paused)):
            if value is not None:
                self.model.limits[uid][name] = value

    @invariant()
    def each_user_is_in_exactly_one_place(self):
        base, redis = self.base, self.redis
        rotation = self.run(redis.lrange(Keys.rotation(base), 0, -1))
        parked = self.run(redis.smembers(Keys.paused(base)))
        waiting = {m for m in self.run(redis.zrange(Keys.delayed(base), 0, -1)) if ":" not in m}
        for uid in LANE_USERS:
            mark = self.run(redis.get(Keys.state(base, uid)))
            assert mark == self.model.place(uid), (uid, mark, self.model.place(uid))
            assert rotation.count(uid) == (mark == "r"), f"{uid} {mark}, rotation {rotation}"
            assert (uid in parked) == (mark == "p")
            assert uid not in waiting, "no start rate here: no user entry in the due-time index"

    @invariant()
    def redis_counts_what_the_model_holds(self):
        for uid in LANE_USERS:
            stats = self.run(self.queue.stats(uid))
            model = self.model
            assert (stats.queued, stats.scheduled, stats.processing) == (
                model.queued(uid), len(model.scheduled[uid]), len(model.running[uid])), uid
            for key, jids in model.lanes[uid].items():
                lane = Keys.pending(self.base, uid) if key == "" else Keys.lane(self.base, uid, key)
                assert self.run(self.redis.lrange(lane, 0, -1)) == jids, (uid, key)


def test_the_engine_chooses_only_what_section_7_allows(settings_factory):
    run_state_machine_as_test(lambda: LaneMachine(settings_factory), settings=LANE_SETTINGS)
