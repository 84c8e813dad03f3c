"""Queue.finish_many: several finishes in one round trip, each as `finish` alone."""

from __future__ import annotations

import uuid

from engine import connection
from engine.jobs import JobStatus
from engine.queue import Queue

OWNER = "test-finish-many"


async def test_finish_many_records_each_outcome_and_claims_the_next_jobs(settings):
    redis = connection.client(settings.redis_url)
    queue = Queue.from_settings(redis, settings)
    try:
        ann, bob = uuid.uuid4().hex, uuid.uuid4().hex
        for uid in (ann, bob):
            await queue.enqueue(uid, [(f"{uid}-1", "one", None), (f"{uid}-2", "two", None)], 10)
        base = queue.keys.user_base(ann)
        first = {j.user_id: j for j in (await queue.claim(base, 2, OWNER, 30)).jobs}
        assert {j.job_id for j in first.values()} == {f"{ann}-1", f"{bob}-1"}

        batches = await queue.finish_many(
            [(first[ann], True, "done"), (first[bob], False, "boom")],
            claim_n=1, owner=OWNER, lease_seconds=30)

        ok, failed = await queue.get(ann, f"{ann}-1"), await queue.get(bob, f"{bob}-1")
        assert (ok.status, ok.processed_data) == (JobStatus.COMPLETED, "done")
        assert failed.status == JobStatus.QUEUED and failed.attempts == 1, "waits for its retry"
        claimed = [j.job_id for b in batches for j in b.jobs]
        assert claimed == [f"{ann}-2"], "ann's next job; bob's waits behind his retry"
    finally:
        await redis.aclose()
