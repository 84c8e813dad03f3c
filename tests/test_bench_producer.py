"""The listeners benchmark's producer: several finishes in one round trip, each as `finish` alone."""

from __future__ import annotations

import uuid

from bench.listeners.producer import OWNER, finish_batch
from engine import connection
from engine.jobs import JobStatus
from engine.queue import Queue


async def test_finish_batch_completes_each_job_and_claims_the_next_ones(settings):
    redis = connection.client(settings.redis_url)
    queue = Queue.from_settings(redis, settings)
    try:
        ann, bob = uuid.uuid4().hex, uuid.uuid4().hex
        for uid in (ann, bob):
            await queue.enqueue(uid, [(f"{uid}-1", "one", None), (f"{uid}-2", "two", None)], 10)
        base = queue.keys.user_base(ann)
        first = (await queue.claim(base, 2, OWNER, 30)).jobs
        assert {j.job_id for j in first} == {f"{ann}-1", f"{bob}-1"}

        claimed = await finish_batch(queue, first, claim_n=1)

        for uid in (ann, bob):
            done = await queue.get(uid, f"{uid}-1")
            assert (done.status, done.processed_data) == (JobStatus.COMPLETED, "ok")
        assert sorted(j.job_id for j in claimed) == sorted([f"{ann}-2", f"{bob}-2"])
    finally:
        await redis.aclose()
