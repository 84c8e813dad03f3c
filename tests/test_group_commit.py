"""Group commit: several outcomes in one `finish_many` call (the engine), and
the worker that sends the outcomes of one loop iteration together
(workers/commit.py). Every guarantee holds per job inside a batch: its own
lease check, one terminal state, retries, the progress report that rides with
the outcome, and claims in rotation order as that many single claims give.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict

from redis.exceptions import ConnectionError as RedisConnectionError

from engine.jobs import JobStatus
from engine.keys import Keys
from engine.queue import Finish, Queue
from tests.support import wait_until_async
from tests.test_engine import (  # noqa: F401 (fixtures)
    LEASE, OWNER, claim, enqueue, finish, ids, make_queue, queue, redis, users)
from workers.worker import Worker, WorkerConfig


async def finish_many(queue: Queue, finishes: list[Finish], claim_n: int = 0):
    return await queue.finish_many(queue.keys.base(0), finishes, claim_n=claim_n, owner=OWNER,
                                   lease_seconds=LEASE)


# ---- the engine: finish_many.lua ----

async def test_one_call_records_each_outcome_and_a_stale_one_changes_nothing(make_queue):
    queue = make_queue(queue_max_attempts=2)
    ann, bob, cy, dan = users(4)
    for uid in (ann, bob, cy, dan):
        await enqueue(queue, uid, "1", "2")
    a, b, c, d = await claim(queue, n=4)
    assert [j.user_id for j in (a, b, c, d)] == [ann, bob, cy, dan]
    # c's lease was lost (its worker was presumed dead): another run holds the job now
    await queue.redis.hset(Keys.job(queue.keys.base(0), c.job_id), "token", "someone-else")
    batch = await finish_many(queue, [
        Finish(a, True, "A"),
        Finish(b, False, "boom"),  # first attempt of 2: retried
        Finish(c, True, "forged"),
        Finish(d, False, "boom", progress=(0.5, "half")),
    ])
    assert batch.verdicts == ["completed", "retry", "stale", "retry"]
    assert batch.jobs == []

    done = await queue.get(ann, a.job_id)
    assert (done.status, done.processed_data) == (JobStatus.COMPLETED, "A")
    retried = await queue.get(bob, b.job_id)
    assert (retried.status, retried.last_error) == (JobStatus.QUEUED, "boom")
    untouched = await queue.get(cy, c.job_id)
    assert (untouched.status, untouched.processed_data) == (JobStatus.PROCESSING, None)
    assert (await queue.stats(cy)).ready == 0, "the stale outcome recorded nothing"
    assert (await queue.get(dan, d.job_id)).progress == 0.5, "the report went in first"

    # the second attempt of b and d: b completes, d fails for good, in one call
    again = await eventually_claim(queue, {b.job_id, d.job_id})
    by_id = {j.job_id: j for j in again}
    batch = await finish_many(queue, [Finish(by_id[b.job_id], True, "B"),
                                      Finish(by_id[d.job_id], False, "boom again")])
    assert batch.verdicts == ["completed", "failed"]
    assert (await queue.get(bob, b.job_id)).status == JobStatus.COMPLETED
    failed = await queue.get(dan, d.job_id)
    assert (failed.status, failed.error, failed.attempts) == (JobStatus.FAILED, "boom again", 2)
    # one terminal state each: finishing the same attempts again is stale
    batch = await finish_many(queue, [Finish(a, True, "twice"), Finish(by_id[b.job_id], True, "x")])
    assert batch.verdicts == ["stale", "stale"]
    assert [(await queue.dequeue(u)).id for u in (ann, bob, dan)] == [
        a.job_id, b.job_id, d.job_id]
    assert [await queue.dequeue(u) for u in (ann, bob, dan)] == [None] * 3, "each once"


async def eventually_claim(queue: Queue, wanted: set[str]):
    """Claim until the jobs `wanted` (waiting for their retry back-off) are running."""
    got = []

    async def more():
        got.extend(j for j in await claim(queue, n=10) if j.job_id in wanted)
        return {j.job_id for j in got} == wanted

    await wait_until_async(more, timeout=10, interval=0.02, message=f"{wanted} to start")
    return got


async def test_the_progress_report_rides_with_its_outcome(queue):
    ann, bob = users(2)
    await enqueue(queue, ann, "1")
    await enqueue(queue, bob, "1")
    a, b = await claim(queue)
    batch = await finish_many(queue, [Finish(a, True, "A", progress=(1.0, "all done")),
                                      Finish(b, True, "B", progress=(0.25, None))])
    assert batch.verdicts == ["completed", "completed"]
    a_rec, b_rec = await queue.get(ann, a.job_id), await queue.get(bob, b.job_id)
    assert (a_rec.progress, a_rec.progress_message) == (1.0, "all done")
    assert (b_rec.progress, b_rec.progress_message) == (0.25, None)


async def test_a_users_next_job_waits_for_its_own_outcome_in_the_same_batch(queue):
    """Order per key: the user's next job is claimed only after the outcome
    before it is recorded, never beside it."""
    [ann] = users(1)
    one, two, three = await enqueue(queue, ann, "1", "2", "3")
    [first] = await claim(queue)
    batch = await finish_many(queue, [Finish(first, True, "r")], claim_n=5)
    assert ids(batch.jobs) == [two], "one job of the user at a time, the next in order"
    assert (await queue.get(ann, one)).status == JobStatus.COMPLETED


async def test_claims_come_from_the_rotation_as_single_finishes_would_give_them(make_queue):
    """Two identical queues drained by concurrency-4 slots: one finishes each
    batch in one call, the other one job at a time claiming one each; they
    start the same jobs in the same order."""
    batched, single = make_queue(), make_queue()
    names = [f"u{i}" for i in range(7)]
    for q in (batched, single):
        for i, uid in enumerate(names):
            await enqueue(q, uid, *(str(n) for n in range(1 + i % 3)))
    starts = {}
    for q, one_call in ((batched, True), (single, False)):
        running = await claim(q, n=4)
        order = ids(running)
        while running:
            if one_call:
                batch = await finish_many(q, [Finish(j, True, "r") for j in running],
                                          claim_n=len(running))
                assert batch.verdicts == ["completed"] * len(running)
                running = batch.jobs
            else:
                running = [n for j in running for n in (await finish(q, j, claim_n=1)).jobs]
            order += ids(running)
        starts[one_call] = order
    assert starts[True] == starts[False]
    assert len(starts[True]) == sum(1 + i % 3 for i in range(7)), "every job once"


async def test_n_claims_in_one_call_are_n_single_claims_with_weights(make_queue):
    """The claims of a batch follow the rotation exactly as that many claims
    of one each: weighted users keep their turns."""
    queues = make_queue(), make_queue()
    names = ["ann", "bob", "cy"]
    for q in queues:
        await q.set_limits("ann", weight=3)
        for uid in names:
            await enqueue(q, uid, *(str(n) for n in range(6)))
    first = [await claim(q, n=3) for q in queues]
    assert ids(first[0]) == ids(first[1])
    batch = await finish_many(queues[0], [Finish(j, True, "r") for j in first[0]], claim_n=3)
    for j in first[1]:
        await finish(queues[1], j)
    one_by_one = [j for _ in range(3) for j in await claim(queues[1], n=1)]
    assert ids(batch.jobs) == ids(one_by_one)


# ---- the worker ----

class Recorder:
    """An async handler (`handle`) that records each job's start and end."""

    def __init__(self):
        self.events: list[tuple[str, str, int]] = []  # (ev, user, i)
        self.calls = 0

        async def handle(data: str) -> str:
            item = json.loads(data)
            self.calls += 1
            self.events.append(("start", item["u"], item["i"]))
            if item.get("yield"):
                await asyncio.sleep(0)
            self.events.append(("end", item["u"], item["i"]))
            return f"done {item['i']}"

        self.handle = handle


async def run_worker(queue: Queue, handler, **config):
    worker = Worker(queue, handler, WorkerConfig(**{"lease_seconds": LEASE, **config}))
    return worker, asyncio.create_task(worker.run())


async def stop(worker: Worker, running: asyncio.Task) -> None:
    worker.stop()
    await asyncio.wait_for(running, 20)


async def all_finished(queue: Queue, jobs: dict[str, list[str]]) -> bool:
    for uid, jids in jobs.items():
        for rec in (await queue.get_many(uid, jids)).values():
            if not rec.status.terminal:
                return False
    return True


async def test_a_lone_job_goes_out_at_once_in_a_batch_of_one(queue):
    handler = Recorder()
    worker, running = await run_worker(queue, handler.handle, concurrency=10)
    try:
        for n in range(2):
            [jid] = await enqueue(queue, "ann", json.dumps({"u": "ann", "i": n}))
            await wait_until_async(lambda: all_finished(queue, {"ann": [jid]}), timeout=10,
                                   message="the job to finish")
            assert worker._commits.sizes == {1: n + 1}, "no waiting for other outcomes"
    finally:
        await stop(worker, running)


async def drain(queue, handler, users_jobs: dict, concurrency: int) -> Worker:
    """Run a worker until every job of `users_jobs` has finished; it is stopped after."""
    worker, running = await run_worker(queue, handler.handle, concurrency=concurrency)
    try:
        await wait_until_async(lambda: all_finished(queue, users_jobs), timeout=60,
                               message="every job to finish")
    finally:
        await stop(worker, running)
    return worker


async def test_a_busy_worker_batches_and_keeps_each_users_order(queue):
    handler = Recorder()
    users_jobs = {}
    for u in range(40):
        uid = f"user{u}"
        users_jobs[uid] = await enqueue(queue, uid, *(
            json.dumps({"u": uid, "i": i, "yield": i % 2}) for i in range(8)))
    worker = await drain(queue, handler, users_jobs, concurrency=20)
    sizes = worker._commits.sizes
    assert max(sizes) > 1, f"outcomes of one iteration went together: {sizes}"
    assert max(sizes) <= 10, "at most half the slots a batch: two overlap"
    assert sum(n * count for n, count in sizes.items()) == 320, "each outcome sent once"
    assert handler.calls == 320, "no job ran twice"
    per_user = defaultdict(list)
    for ev, uid, i in handler.events:
        per_user[uid].append((ev, i))
    for uid, seen in per_user.items():
        expected = [(ev, i) for i in range(8) for ev in ("start", "end")]
        assert seen == expected, f"{uid}: in order, one at a time"
    for uid, jids in users_jobs.items():
        recs = await queue.get_many(uid, jids)
        assert {r.status for r in recs.values()} == {JobStatus.COMPLETED}
    assert worker.completed == 320


async def test_with_several_shards_each_call_touches_one_shard(make_queue, monkeypatch):
    queue = make_queue(queue_shards=3)
    calls = []
    real = queue.finish_many

    async def checked(base, finishes, **kw):
        assert {queue.keys.user_base(f.job.user_id) for f in finishes} <= {base}
        calls.append((base, len(finishes), kw["claim_n"]))
        return await real(base, finishes, **kw)

    monkeypatch.setattr(queue, "finish_many", checked)
    handler = Recorder()
    users_jobs = {}
    for u in range(30):
        uid = f"user{u}"
        users_jobs[uid] = await enqueue(queue, uid, *(
            json.dumps({"u": uid, "i": i}) for i in range(5)))
    worker = await drain(queue, handler, users_jobs, concurrency=10)
    assert handler.calls == 150
    assert len({base for base, _, _ in calls}) == 3, "every shard served"
    assert sum(n for _, n, _ in calls) == 150
    for uid in users_jobs:
        assert [i for ev, u, i in handler.events if u == uid and ev == "start"] == list(range(5))


async def test_redis_away_while_flushing_retries_each_outcome_until_its_lease_runs_out(
        queue, monkeypatch, caplog):
    """Short outage: the batch is retried and recorded. Long outage: the
    outcome is dropped once its lease would have run out; the lease expires
    and the job runs again (the attempt counts)."""
    real = queue.finish_many
    outage = {"until": 0.0}
    loop = asyncio.get_running_loop()

    async def flaky(*args, **kw):
        if loop.time() < outage["until"]:
            raise RedisConnectionError("connection refused")
        return await real(*args, **kw)

    monkeypatch.setattr(queue, "finish_many", flaky)
    handler = Recorder()
    worker, running = await run_worker(queue, handler.handle, concurrency=2, lease_seconds=1.0)
    try:
        outage["until"] = loop.time() + 0.3  # shorter than the lease
        [short] = await enqueue(queue, "ann", json.dumps({"u": "ann", "i": 0}))
        await wait_until_async(lambda: all_finished(queue, {"ann": [short]}), timeout=10,
                               message="the job to be recorded after the outage")
        assert (await queue.get("ann", short)).attempts == 1

        with caplog.at_level(logging.ERROR, logger="workers"):
            outage["until"] = loop.time() + 1.5  # longer than the lease
            [long] = await enqueue(queue, "bob", json.dumps({"u": "bob", "i": 0}))
            await wait_until_async(lambda: all_finished(queue, {"bob": [long]}), timeout=20,
                                   message="the job to run again and finish")
        assert f"could not record job {long}" in caplog.text
        rec = await queue.get("bob", long)
        assert (rec.status, rec.attempts) == (JobStatus.COMPLETED, 2), "ran again, counted"
    finally:
        await stop(worker, running)


async def test_sigterm_lets_the_batch_in_flight_complete(queue, monkeypatch):
    real = queue.finish_many
    sent, release = asyncio.Event(), asyncio.Event()

    async def slow(*args, **kw):
        sent.set()
        await release.wait()
        return await real(*args, **kw)

    monkeypatch.setattr(queue, "finish_many", slow)
    handler = Recorder()
    jobs = {uid: await enqueue(queue, uid, json.dumps({"u": uid, "i": 0}),
                               json.dumps({"u": uid, "i": 1})) for uid in ("ann", "bob")}
    worker, running = await run_worker(queue, handler.handle, concurrency=4,
                                       shutdown_grace_seconds=10)
    await asyncio.wait_for(sent.wait(), 10)
    worker.stop()  # the batch of the first jobs is on its way
    await asyncio.sleep(0)
    assert not running.done()
    release.set()
    await asyncio.wait_for(running, 20)
    for uid, (first, second) in jobs.items():
        assert (await queue.get(uid, first)).status == JobStatus.COMPLETED
        # claimed by that batch before the stop was seen: run within the
        # grace, or handed back; never left running without a worker
        assert (await queue.get(uid, second)).status in (JobStatus.COMPLETED, JobStatus.QUEUED)
    assert (await queue.stats("ann")).processing == 0
    assert (await queue.stats("bob")).processing == 0


async def test_sigterm_with_a_batch_stuck_in_flight_stops_within_the_grace(queue, monkeypatch):
    """Redis never answers the batch: the worker still stops after its grace
    period; the outcomes were not recorded, so the jobs keep their leases,
    which expire, and run again elsewhere."""
    sent = asyncio.Event()

    async def stuck(*args, **kw):
        sent.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(queue, "finish_many", stuck)
    handler = Recorder()
    jobs = {uid: await enqueue(queue, uid, json.dumps({"u": uid, "i": 0}))
            for uid in ("ann", "bob", "cy")}
    worker, running = await run_worker(queue, handler.handle, concurrency=4,
                                       shutdown_grace_seconds=0.5)
    await asyncio.wait_for(sent.wait(), 10)
    worker.stop()
    await asyncio.wait_for(running, 10)
    assert handler.calls == 3
    for uid, [jid] in jobs.items():
        assert (await queue.get(uid, jid)).status == JobStatus.PROCESSING, "its lease will expire"
