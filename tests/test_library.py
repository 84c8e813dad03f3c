"""The worker's per-job scripts as a Redis Functions library (engine/library.py):
the same choices as the scripts, on a Redis that has functions, and the
scripts themselves where it has none.

The library's tests run on a `redis-server` of 7 or later started here (the
embedded server the other tests use is 6.2: no functions); they skip when no
such binary is installed (CI installs Debian's).
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import tempfile
import uuid

import hypothesis
import pytest
import redis as redis_sync
from hypothesis import strategies as st

from engine import connection, library
from engine.keys import Keys
from engine.queue import Finish, NewJob, Queue
from tests.cluster_support import REDIS_SERVER, _free_ports, missing_binaries
from tests.test_engine import redis  # noqa: F401 (the embedded server's client)

OWNER, LEASE = "w1", 30.0


@pytest.fixture(scope="module")
def redis7_url():
    """A redis-server of our own (7 or later), so the test may fill its memory."""
    if missing_binaries():
        pytest.skip(missing_binaries())
    version = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout
    major = int(re.search(r"v=(\d+)", version).group(1))
    if major < 7:
        pytest.skip(f"redis-server {major}.x has no functions")
    [port] = _free_ports(1)
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", home],
                                stdout=subprocess.DEVNULL)
        client = redis_sync.Redis(port=port)
        try:
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis_sync.ConnectionError:
                    subprocess.run(["sleep", "0.05"])
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            client.close()
            proc.kill()
            proc.wait()


@pytest.fixture
async def redis7(redis7_url):
    client = connection.client(redis7_url)
    yield client
    await client.aclose()


def new_queue(redis, shards: int = 1, functions: bool = True) -> Queue:
    queue = Queue(redis, Keys(f"t{uuid.uuid4().hex[:8]}", shards))
    if not functions:  # as on a Redis without them
        queue._scripts["claim"].library.usable = False
    return queue


def calls(redis_url: str, command: str) -> int:
    with redis_sync.Redis.from_url(redis_url) as client:
        return client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


async def test_the_worker_s_calls_are_functions_on_redis_7(redis7, redis7_url):
    queue = new_queue(redis7)
    await queue.enqueue("ann", [NewJob("a", "A", None), NewJob("b", "B", None)], 100)
    [first] = (await queue.claim(queue.keys.base(0), 1, OWNER, LEASE)).jobs  # loads the library
    before = calls(redis7_url, "fcall"), calls(redis7_url, "evalsha")

    batch = await queue.finish(first, True, "done", claim_n=1, owner=OWNER, lease_seconds=LEASE)

    assert (first.job_id, batch.verdict, [j.job_id for j in batch.jobs]) == ("a", "completed", ["b"])
    assert (calls(redis7_url, "fcall"), calls(redis7_url, "evalsha")) == (before[0] + 1, before[1])
    listed = str(await redis7.function_list())
    assert all(f"'{name}'" in listed for name in library.source()[1].values())


async def test_a_redis_that_lost_the_library_loads_it_again_and_the_call_runs_once(redis7):
    queue = new_queue(redis7)
    await queue.enqueue("ann", [NewJob("a", "A", None)], 100)
    [job] = (await queue.claim(queue.keys.base(0), 1, OWNER, LEASE)).jobs
    await redis7.function_flush()  # as after a restart without persistence

    batch = await queue.finish(job, True, "done", claim_n=1, owner=OWNER, lease_seconds=LEASE)

    assert batch.verdict == "completed"
    assert await redis7.lrange(queue.keys.ready(queue.keys.base(0), "ann"), 0, -1) == ["a"]


async def test_a_call_that_failed_half_way_leaves_no_state_to_the_next(redis7):
    """A function's helpers outlive its calls: a call that stopped on an error
    after its deferred writes began must not hand them to the next call. (The
    writes it made before the error stay, as a script's do.)"""
    async def fail_then_claim(queue: Queue):
        await queue.enqueue("ann", [NewJob("a", "A", None)], 100)
        await queue.enqueue("bob", [NewJob("b", "B", None)], 100)
        base = queue.keys.base(0)
        with pytest.raises(redis_sync.ResponseError):
            # a lease that is no number: the claim of two fails once it has
            # popped both users and started ann's job, before its deferred writes
            await queue._scripts["claim"](keys=[base], args=[2, OWNER, "soon"])
        jobs = (await queue.claim(base, 2, OWNER, LEASE)).jobs
        return [j.job_id for j in jobs], (await queue.totals()).processing

    by_function = await fail_then_claim(new_queue(redis7))
    by_script = await fail_then_claim(new_queue(redis7, functions=False))

    assert by_function == by_script == ([], 0)  # nobody left in the rotation; counts deferred


async def test_a_full_redis_refuses_a_function_as_it_refuses_a_script_s_write(redis7):
    """At maxmemory a function is refused whole, before it runs; the worker
    treats it as it treats a script's refused write: try again later."""
    queue = new_queue(redis7)
    await queue.enqueue("ann", [NewJob("a", "A", None)], 100)
    await redis7.config_set("maxmemory-policy", "noeviction")
    await redis7.config_set("maxmemory", 1)
    try:
        for library_there in (True, False):  # refused: the call, or loading the library
            if not library_there:
                await redis7.function_flush()
            with pytest.raises(redis_sync.ResponseError) as refused:
                await queue.claim(queue.keys.base(0), 1, OWNER, LEASE)
            assert connection.is_transient(refused.value)
    finally:
        await redis7.config_set("maxmemory", 0)
    [job] = (await queue.claim(queue.keys.base(0), 1, OWNER, LEASE)).jobs
    assert job.job_id == "a", "the refused claims took nothing"
    assert queue._scripts["claim"].library.usable, "a full Redis is no reason to give functions up"


async def test_a_redis_without_functions_runs_the_same_scripts(redis, redis_url, caplog):
    """The embedded server (6.2) has no FCALL: the scripts run, and one log line says so."""
    with redis_sync.Redis.from_url(redis_url) as plain:
        if int(plain.info("server")["redis_version"].split(".")[0]) >= 7:
            pytest.skip("REDIS_URL is a Redis with functions")
    queue = new_queue(redis)
    await queue.enqueue("ann", [NewJob("a", "A", None), NewJob("b", "B", None)], 100)
    with caplog.at_level(logging.INFO, logger="engine.library"):
        [first] = (await queue.claim(queue.keys.base(0), 1, OWNER, LEASE)).jobs
        batch = await queue.finish(first, True, "ok", claim_n=1, owner=OWNER, lease_seconds=LEASE)

    assert [j.job_id for j in batch.jobs] == ["b"]
    assert not queue._scripts["finish"].library.usable
    assert len([r for r in caplog.records if "EVALSHA" in r.message]) == 1


def test_a_helper_s_state_must_start_empty_to_be_set_again_each_call():
    assert library.state("memo", "local seen = {}\nlocal function f() end\n") == [("seen", "{}")]
    with pytest.raises(library.LibraryError, match="shared by every call"):
        library.state("counter", "local calls = 0\n")


# ---- the library makes the scripts' choices, call by call ----

step = st.one_of(
    st.tuples(st.just("enqueue"), st.sampled_from("abc"), st.sampled_from(["", "k1", "k2"]),
              st.integers(-2, 2)),
    st.tuples(st.just("claim"), st.integers(1, 3)),
    st.tuples(st.just("finish"), st.integers(0, 3), st.booleans(), st.integers(0, 2)),
)


async def run_steps(queue: Queue, steps) -> list:
    """What a worker would see: jobs claimed, verdicts, and the final counts.
    Each job is due a millisecond after the one before (an hour ago), so lanes
    rank the same however fast each run goes."""
    seen, running, n = [], [], 0
    an_hour_ago = (await queue.redis.time())[0] * 1000 - 3_600_000
    for s in steps:
        if s[0] == "enqueue":
            _, uid, key, priority = s
            n += 1
            await queue.enqueue(uid, [NewJob(f"{uid}{n}", str(n), None, key or None, priority,
                                                 an_hour_ago + n)], 100)
        elif s[0] == "claim":
            for shard in range(queue.keys.shards):
                jobs = (await queue.claim(queue.keys.base(shard), s[1], OWNER, LEASE)).jobs
                running += jobs
                seen.append(("claim", [(j.user_id, j.job_id, j.attempts) for j in jobs]))
        elif running:
            _, pick, ok, claim_n = s
            done = running[:pick + 1]
            by_shard = {}
            for job in done:
                by_shard.setdefault(queue.keys.shard_of(job.user_id), []).append(job)
            for shard, jobs in sorted(by_shard.items()):
                batch = await queue.finish_many(
                    queue.keys.base(shard), [Finish(j, ok, "v") for j in jobs],
                    claim_n=claim_n, owner=OWNER, lease_seconds=LEASE)
                running = [j for j in running if j not in jobs] + batch.jobs
                seen.append(("finish", batch.verdicts,
                             [(j.user_id, j.job_id, j.attempts) for j in batch.jobs]))
    totals = await queue.totals()
    seen.append(("totals", totals.queued, totals.processing))
    return seen


@hypothesis.settings(max_examples=40, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(steps=st.lists(step, max_size=25))
def test_functions_and_scripts_make_the_same_choices(redis7_url, steps):
    """Two shards, so consecutive calls name different KEYS[1]: a call that
    saw another's keys or state would choose differently."""
    async def both():
        client = connection.client(redis7_url)
        try:
            by_function = await run_steps(new_queue(client, shards=2), steps)
            by_script = await run_steps(new_queue(client, shards=2, functions=False), steps)
        finally:
            await client.aclose()
        return by_function, by_script

    by_function, by_script = asyncio.run(both())
    assert by_function == by_script
