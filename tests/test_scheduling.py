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
