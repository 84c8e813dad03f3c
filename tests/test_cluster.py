"""Scale-out: a real 3-master Redis Cluster, several API and worker processes,
and the MongoDB replica-set settings.

The cluster is started here from the `redis-server` binary on free loopback
ports (tests/cluster_support.py); the tests are skipped, saying why, when the
binary is missing (`.ci/run` installs it). MongoDB has no server in CI: the
replica-set code paths are checked on the client's configuration and on the
in-memory store.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter, defaultdict
from datetime import datetime

import pytest

from tests.cluster_support import LocalCluster, missing_binaries
from tests.handlers import read_log
from tests.conftest import make_settings
from tests.support import ApiProcess, WorkerProcesses, wait_until

HANDLER = "tests.handlers:record_async"
SHARDS = 16

needs_cluster = pytest.mark.skipif(
    missing_binaries() is not None, reason=f"no Redis Cluster here: {missing_binaries()}")


@pytest.fixture(scope="module")
def cluster():
    if missing_binaries():
        pytest.skip(f"no Redis Cluster here: {missing_binaries()}")
    c = LocalCluster(masters=3).start()
    yield c
    c.stop()


@pytest.fixture
def cluster_settings(cluster):
    return make_settings(
        cluster.url, redis_cluster=True, queue_shards=SHARDS, queue_handler=HANDLER,
        queue_lease_seconds=3, queue_concurrency=3,
        mongo_uri=None,  # each API its own in-memory store; see the two-API test
    )


@pytest.fixture
def cluster_client(cluster):
    client = cluster.client()
    yield client
    client.close()


def item(user: str, i: int, **kw) -> str:
    return json.dumps({"u": user, "i": i, **kw})


# ---- the engine on a cluster, in-process ----


@needs_cluster
async def test_every_script_and_pipeline_works_on_a_cluster(cluster, cluster_settings):
    from engine import connection
    from engine.keys import Keys
    from engine.queue import Queue
    from redis.asyncio.cluster import RedisCluster

    assert cluster_settings.redis_url.startswith("redis+cluster://")
    redis = connection.client(cluster_settings.redis_url)
    assert isinstance(redis, RedisCluster)
    keys = Keys(cluster_settings.queue_prefix, SHARDS)
    queue = Queue(redis, keys)
    try:
        await redis.initialize()
        slots = {redis.keyslot(b) for b in keys.all_bases()}
        nodes = {redis.get_node_from_key(b).name for b in keys.all_bases()}
        assert len(slots) == SHARDS and len(nodes) == 3, "shards spread over all masters"

        # a user in every shard, each through every transition
        users: dict[int, str] = {}
        n = 0
        while len(users) < SHARDS:
            users.setdefault(keys.shard_of(f"user{n}"), f"user{n}")
            n += 1
        for uid in users.values():
            placed = await queue.enqueue(uid, [("a" + uid, "x", "k1"), ("b" + uid, "y", None),
                                               ("c" + uid, "z", None)], 10)
            assert [p.created for p in placed] == [True] * 3
            assert (await queue.stats(uid)).queued == 3
        assert not await queue.is_idle()
        for uid in users.values():
            base = keys.user_base(uid)
            batch = await queue.claim(base, 5, "w1", 10)
            job = next(j for j in batch.jobs if j.user_id == uid)
            assert job.job_id == "a" + uid
            assert await queue.heartbeat([job], 10) == []
            after = await queue.finish(job, True, "done", claim_n=1, owner="w1", lease_seconds=10)
            assert after.verdict == "completed"
            nxt = next(j for j in after.jobs if j.user_id == uid)
            assert await queue.release(nxt)
            assert (await queue.cancel(uid, "c" + uid)).status.value == "CANCELLED"
            records = await queue.get_many(uid, ["a" + uid, "b" + uid])
            assert records["a" + uid].status.value == "COMPLETED"
            assert [r.id for r in await queue.archive_batch(base)]
            assert (await queue.dequeue(uid)).id == "a" + uid
            assert await queue.reclaim(base) == 0
            assert (await queue.events_after(uid, "0-0"))[0][1].id == "a" + uid
            # the operators' scripts
            assert (await queue.set_limits(uid, paused=True, weight=2)).paused
            assert (await queue.retry(uid, "c" + uid)).job.status.value == "QUEUED"
            assert (await queue.limits_of([uid]))[uid].weight == 2
        # the operators' figures, summed over the shards of every master
        totals = await queue.totals()
        assert (totals.queued, totals.processing) == (2 * SHARDS, 0)
        assert await queue.backlog() == sorted(((uid, 2) for uid in users.values()), reverse=True)
        assert len(await queue.backlog(3)) == 3
        assert sum(p.enqueued for p in await queue.throughput(15)) == 4 * SHARDS
        assert (await queue.throughput(1))[-1].queued == 2 * SHARDS
        assert sorted((await queue.user_queues(list(users.values()))).values(),
                      key=lambda q: q.queued)[0].queued == 2
        for base in keys.all_bases():
            assert await queue.recount(base) == 0
        for uid in users.values():
            assert await queue.purge(uid) == 2
        assert (await queue.totals()).queued == 0
        # every key the scripts made lives in its shard's slot
        for base in keys.all_bases():
            slot = redis.keyslot(base)
            node = redis.get_node_from_key(base)
            made = await redis.execute_command(
                "CLUSTER", "GETKEYSINSLOT", slot, 1000, target_nodes=node)
            assert made and all(k.startswith(base + ":") for k in made)
    finally:
        await redis.aclose()


@needs_cluster
async def test_the_archiver_marks_jobs_archived_on_a_cluster(cluster, cluster_settings):
    """mark_archived runs one script per job; redis-py refuses scripts inside a
    cluster pipeline, so on a cluster they must not be pipelined."""
    from engine import connection
    from engine.keys import Keys
    from engine.queue import Queue

    redis = connection.client(cluster_settings.redis_url)
    keys = Keys(cluster_settings.queue_prefix, SHARDS)
    queue = Queue(redis, keys)
    try:
        uid = "archived-user"
        base = keys.user_base(uid)
        await queue.enqueue(uid, [("j1", "x", None), ("j2", "y", None)], 10)
        job = (await queue.claim(base, 1, "w", 10)).jobs[0]
        nxt = (await queue.finish(job, True, "r", claim_n=1, owner="w", lease_seconds=10)).jobs[0]
        await queue.finish(nxt, True, "r", claim_n=0, owner="w", lease_seconds=10)
        batch = await queue.archive_batch(base)
        assert {r.id for r in batch} == {"j1", "j2"}
        for _ in range(10):  # as the archiver does: until the list is empty
            await queue.mark_archived(base, batch, 60, 60)
            batch = await queue.archive_batch(base)
            if not batch:
                break
        assert batch == []
        assert await redis.ttl(Keys.job(base, "j1")) > 0, "archived: Redis may forget it"
    finally:
        await redis.aclose()


@needs_cluster
async def test_a_cancelled_blocking_read_leaves_the_client_usable(cluster, cluster_settings):
    """Waiting workers cancel BLPOPs; the next command must not read a stale reply."""
    from engine import connection

    redis = connection.client(cluster_settings.redis_url)
    key = f"{cluster_settings.queue_prefix}:{{s3}}:signal"
    try:
        for _ in range(20):
            task = asyncio.create_task(redis.blpop([key], 5))
            await asyncio.sleep(0.02)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await redis.rpush(key, "token")
        assert list(await redis.blpop([key], 1)) == [key, "token"]
        await redis.set(key + ":probe", "v")
        assert await redis.get(key + ":probe") == "v"
    finally:
        await redis.aclose()


# ---- processes: 2 APIs, 4 workers ----


def _subscriptions(api: ApiProcess) -> float:
    import httpx

    for line in httpx.get(api.url + "/metrics").text.splitlines():
        if line.startswith("graphql_active_subscriptions "):
            return float(line.split()[1])
    return 0.0


async def _listen(api: ApiProcess, token: str, count: int, started: asyncio.Event, timeout=90):
    from gql import Client
    from tests.test_events import PROCESSED, transport

    events = []
    async with Client(transport=transport(api, token)) as session:
        async def run():
            agen = session.subscribe(PROCESSED)
            started.set()
            async for result in agen:
                events.append(result["processed"])
                if len(events) >= count:
                    return

        await asyncio.wait_for(run(), timeout)
    return events


def _open_starts(log: list[dict]) -> dict[int, int]:
    """Attempts started but not ended, by worker pid."""
    open_ = Counter()
    for e in log:
        if e["ev"] == "start":
            open_[e["pid"]] += 1
        elif e["ev"] == "end":
            open_[e["pid"]] -= 1
    return open_


@needs_cluster
async def test_two_apis_four_workers_on_a_cluster_lose_nothing_when_a_worker_is_killed(
        cluster_settings, cluster_client, tmp_path):
    settings = cluster_settings
    apis = [ApiProcess(settings, tmp_path), ApiProcess(settings, tmp_path)]
    workers = WorkerProcesses(settings, tmp_path)
    per_user, n_users = 15, 10
    try:
        for api in apis:
            api.start()
        # with no MONGO_URI each API keeps its own accounts: every user lives on one
        # API, as a sticky load balancer would place them; half on each
        users = [await asyncio.to_thread(lambda a=apis[n % 2]: a.client().as_user())
                 for n in range(n_users)]
        started = [asyncio.Event() for _ in users]
        listeners = [asyncio.create_task(_listen(apis[n % 2], u.token, per_user, started[n]))
                     for n, u in enumerate(users)]
        for ev in started:
            await ev.wait()
        for api in apis:
            # a deadline, not a timing: a loaded machine once took more than 15 s
            await asyncio.to_thread(wait_until, lambda a=api: _subscriptions(a) >= n_users // 2,
                                    60, 0.05, "subscriptions")

        ids = {}
        for n, u in enumerate(users):
            batch = await asyncio.to_thread(u.enqueue_many, [
                {"requestData": item(f"u{n}", i, sleep=0.08)} for i in range(per_user)])
            ids[n] = [j["id"] for j in batch]
        procs = [workers.start() for _ in range(4)]

        # kill -9 a worker while it runs jobs
        def busy_victim():
            open_ = _open_starts(read_log(cluster_client, settings.queue_prefix))
            return next((p for p in procs if open_.get(p.pid, 0) > 0), None)

        await asyncio.sleep(1.0)
        victim = await asyncio.to_thread(wait_until, busy_victim, 20, 0.02, "a busy worker")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_mid_job = _open_starts(read_log(cluster_client, settings.queue_prefix))[victim.pid]
        assert killed_mid_job > 0

        heard = await asyncio.gather(*listeners)
        for n, events in enumerate(heard):
            # every listener, on either API, hears its own jobs, once, in order
            assert [e["job"]["id"] for e in events] == ids[n]
            assert {e["job"]["status"] for e in events} == {"COMPLETED"}
            assert [e["job"]["processedData"] for e in events] == [
                f"done u{n}-{i}" for i in range(per_user)]

        # exactly one recorded outcome per job: each dequeued once, in order
        for n, u in enumerate(users):
            seen = [(await asyncio.to_thread(u.dequeue))["id"] for _ in range(per_user)]
            assert seen == ids[n]
            assert await asyncio.to_thread(u.dequeue) is None

        log = read_log(cluster_client, settings.queue_prefix)
        ends = Counter((e["u"], e["i"]) for e in log if e["ev"] == "end")
        assert ends == {(f"u{n}", i): 1 for n in range(n_users) for i in range(per_user)}
        # per-user order, no overlap: each attempt starts after the previous one ended
        by_user = defaultdict(list)
        for e in log:
            by_user[e["u"]].append(e)
        for u, entries in by_user.items():
            open_at = None
            done = []
            for e in entries:  # a user's log entries in the order Redis received them
                if e["ev"] == "start":
                    assert open_at is None or open_at["pid"] == victim.pid, (
                        f"{u}: {e} started while {open_at} ran")
                    open_at = e
                else:
                    done.append(e["i"])
                    open_at = None
            assert done == list(range(per_user))
        # the killed worker's jobs ran again elsewhere; the jobs spread over the others
        pids = {e["pid"] for e in log if e["ev"] == "end"}
        assert len(pids - {victim.pid}) >= 2
    finally:
        workers.stop_all()
        codes = [api.stop() for api in apis]
    assert codes == [0, 0]
    alive = [p for p in workers.procs if p is not victim]
    assert [p.returncode for p in alive] == [0, 0, 0], "survivors stop cleanly on SIGTERM"


@needs_cluster
async def test_job_updates_reach_their_owner_only_on_a_cluster(cluster_settings, tmp_path):
    """Users on different shards and masters, each listening to their own job's
    updates through one API: each hears exactly its own job, and another
    user's job id is NOT_FOUND."""
    from gql.transport.exceptions import TransportQueryError
    from tests.test_progress import updates

    settings = cluster_settings
    api = ApiProcess(settings, tmp_path)
    workers = WorkerProcesses(settings, tmp_path)
    try:
        api.start()
        users = [await asyncio.to_thread(lambda: api.client().as_user()) for _ in range(6)]
        jobs = [await asyncio.to_thread(u.enqueue, json.dumps({"steps": 3, "gap": 0.2}))
                for u in users]
        started = [asyncio.Event() for _ in users]
        listeners = [asyncio.create_task(updates(api, u.token, j["id"], started=s, timeout=90))
                     for u, j, s in zip(users, jobs, started)]
        for ev in started:
            await ev.wait()
        await asyncio.to_thread(wait_until, lambda: _subscriptions(api) >= len(users),
                                15, 0.05, "subscriptions")
        workers.start("--handler", "tests.handlers:progress_async")
        for job, heard in zip(jobs, await asyncio.gather(*listeners)):
            assert {u["job"]["id"] for u in heard} == {job["id"]}
            assert [u["kind"] for u in heard] == [
                "QUEUED", "STARTED", "PROGRESS", "PROGRESS", "PROGRESS", "COMPLETED"]
        with pytest.raises(TransportQueryError) as err:
            await updates(api, users[0].token, jobs[1]["id"], timeout=20)
        assert err.value.errors[0]["extensions"]["code"] == "NOT_FOUND"
    finally:
        workers.stop_all()
        api.stop()


@needs_cluster
def test_a_light_user_is_served_within_a_round_on_a_busy_cluster(
        cluster_settings, cluster_client, tmp_path):
    """Six users with big backlogs fill every slot; each slot takes its next job
    from the next shard in turn, so a light user's first job waits about one
    job per user ahead of it, not for the backlogs."""
    settings = cluster_settings
    api = ApiProcess(settings, tmp_path)
    workers = WorkerProcesses(settings, tmp_path)
    heavy_users, slots, job = 6, 4, 0.05
    try:
        api.start()
        http = api.client()
        heavy = [http.as_user() for _ in range(heavy_users)]
        for n, h in enumerate(heavy):
            h.enqueue_many([{"requestData": item(f"h{n}", i, sleep=job)} for i in range(150)])
        for _ in range(slots):
            workers.start("--concurrency", "1")
        light = http.as_user()
        wait_until(lambda: sum(h.stats()["ready"] for h in heavy) >= 20, timeout=30)
        mine = light.enqueue(item("light", 0))
        wait_until(lambda: light.job(mine["id"])["status"] == "COMPLETED", timeout=30)

        t0 = datetime.fromisoformat(light.job(mine["id"])["createdAt"]).timestamp()
        starts = [e for e in read_log(cluster_client, settings.queue_prefix) if e["ev"] == "start"]
        light_at = next(n for n, e in enumerate(starts) if e["u"] == "light")
        waited = starts[light_at]["t"] - t0
        heavy_between = [e for e in starts[:light_at] if e["t"] > t0]
        assert len(heavy_between) <= heavy_users + slots, (
            f"{len(heavy_between)} heavy jobs started before the light user's first job")
        assert waited < (heavy_users + slots) * job + 1.0
        assert sum(h.stats()["queued"] for h in heavy) > 100, "the backlogs were still waiting"
    finally:
        workers.stop_all()
        api.stop()


@needs_cluster
def test_a_burst_worker_sees_the_cluster_idle_across_all_shards(
        cluster_settings, cluster_client, tmp_path):
    api = ApiProcess(settings := cluster_settings, tmp_path)
    try:
        api.start()
        users = [api.client().as_user() for _ in range(4)]
        ids = [[j["id"] for j in u.enqueue_many(
            [{"requestData": item(f"b{n}", i)} for i in range(5)])] for n, u in enumerate(users)]
        done = WorkerProcesses(settings, tmp_path).run_burst(timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        for u, mine in zip(users, ids):  # burst exits only once every job is visible
            assert [u.job(j)["status"] for j in mine] == ["COMPLETED"] * 5
    finally:
        api.stop()


# ---- MongoDB as a replica set ----

REPLICA_URI = "mongodb://db1.example:27017,db2.example:27017,db3.example:27017/?replicaSet=rs0"


async def test_mongo_client_writes_with_majority_and_retries_on_a_replica_set():
    from graph.store import mongo_client

    client = mongo_client(REPLICA_URI)  # lazy: nothing is contacted until the first operation
    try:
        assert client.write_concern.document == {"w": "majority"}
        assert client.options.retry_writes is True
        assert client.options.replica_set_name == "rs0"
        topology = client.topology_description  # not connected: every member unknown
        assert topology.topology_type_name == "ReplicaSetNoPrimary"
        assert set(topology.server_descriptions()) == {
            ("db1.example", 27017), ("db2.example", 27017), ("db3.example", 27017)}
        # every collection the store writes to inherits it: users and job records
        for name in ("users", "jobs"):
            assert client["queue"][name].write_concern.document == {"w": "majority"}
    finally:
        await client.close()


async def test_uri_options_do_not_weaken_the_write_concern():
    """The keyword arguments win over a `w=1` in MONGO_URI."""
    from graph.store import mongo_client

    client = mongo_client(REPLICA_URI + "&w=1&retryWrites=false")
    try:
        assert client.write_concern.document == {"w": "majority"}
        assert client.options.retry_writes is True
    finally:
        await client.close()


async def test_indexes_are_created_at_start():
    from graph.store import JobDocument, User, open_store

    client = await open_store(None, "replica_test")
    try:
        users = await User.get_pymongo_collection().index_information()
        jobs = await JobDocument.get_pymongo_collection().index_information()
        assert any(ix.get("unique") and list(ix["key"]) == [("username_key", 1)]
                   for ix in users.values())
        assert {tuple(ix["key"]) for ix in jobs.values()} >= {
            (("user_id", 1), ("_id", -1)), (("user_id", 1), ("status", 1), ("_id", -1))}
    finally:
        client.close()


async def test_archived_snapshots_are_idempotent_under_replayed_writes():
    """A retried write (retryWrites, or two archivers) never rolls a job back."""
    from engine.jobs import JobRecord, JobStatus
    from graph.store import JobDocument, open_store, save_job_snapshots

    client = await open_store(None, "replica_test_2")
    try:
        now = datetime.now().astimezone()
        old = JobRecord(id="665f1f77bcf86cd799439011", user_id="u", request_data="d",
                        status=JobStatus.PROCESSING, attempts=1, created_at=now, version=1)
        new = JobRecord(id=old.id, user_id="u", request_data="d", status=JobStatus.COMPLETED,
                        attempts=1, created_at=now, processed_data="r", version=2)
        await save_job_snapshots([new])
        await save_job_snapshots([old, new])  # replayed and out of order
        await save_job_snapshots([old])
        stored = await JobDocument.get_pymongo_collection().find_one({"_id": old.id})
        assert stored["status"] == "COMPLETED" and stored["version"] == 2
        assert await JobDocument.get_pymongo_collection().count_documents({}) == 1
    finally:
        client.close()
