"""What the scripts' cost-cutting must not change (engine/scripts.py,
lua/_lib.lua: deferred writes, numbers written as text)."""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid

import hypothesis
import pytest
from hypothesis import strategies as st

from engine import connection
from engine.queue import Finish, NewJob, Queue
from engine.scripts import (
    LUA_DIR, ScriptError, check_includes, check_returns, expand_keys, source)
from tests.test_engine import claim, finish, ids, make_queue, queue, redis, users  # noqa: F401
from tests.test_scheduling import add, job, redis_ms


async def test_a_lane_ranks_by_its_head_s_due_time_to_the_millisecond(queue):
    """Two keys of one priority whose heads fell due 5 ms apart start in due
    order, not by key name: the score, 16 digits, is written as text exactly."""
    [ann] = users(1)
    past = (await redis_ms(queue) // 1000 - 3600) * 1000 + 10  # an hour ago, mid-100 ms
    later_a, early_b = await add(queue, ann, job(ann, "a", "a", run_at_ms=past + 5),
                                 job(ann, "b", "b", run_at_ms=past))
    [first] = await claim(queue)
    assert first.job_id == early_b
    [second] = (await finish(queue, first, claim_n=1)).jobs
    assert second.job_id == later_a


async def test_finishes_and_claims_leave_every_user_in_the_right_place(queue):
    """A group commit's deferred writes (states, the rotation, counts) as one
    call per job would have left them: every user served in turn, counts exact."""
    names = users(3)
    for uid in names:
        await add(queue, uid, *(job(uid, str(i)) for i in range(3)))
    running = await claim(queue, n=3)
    assert [j.user_id for j in running] == names
    order = []
    while running:
        batch = await queue.finish_many(queue.keys.base(0), [
            Finish(j, True, "ok") for j in running],
            claim_n=3, owner="w", lease_seconds=30)
        assert batch.verdicts == ["completed"] * len(running)
        running = batch.jobs
        order += [j.user_id for j in running]
    assert order == names * 2, "round robin, one job of each user at a time"
    totals = await queue.totals()
    assert (totals.queued, totals.processing, totals.users_waiting) == (0, 0, 0)
    assert await queue.is_idle()


def test_a_script_that_defers_writes_must_return_through_done():
    check_returns("good.lua", "defer()\nif x then return done({'a'}) end\nreturn done({'b'})\n")
    with pytest.raises(ScriptError, match="return done"):
        check_returns("bad.lua", "defer()\nif x then return {'early'} end\nreturn done({'b'})\n")


def test_a_helper_that_is_a_variable_is_used_where_it_is_named():
    """`deferred` is read, not called: the include check still sees its uses."""
    assert check_includes("good.lua", "--@include deferred\nlocal w = deferred\n") == ["deferred"]
    with pytest.raises(ScriptError, match=r"calls \['deferred'\] without including"):
        check_includes("bad.lua", "if deferred then return end\n")
    with pytest.raises(ScriptError, match=r"includes \['deferred'\] it does not call"):
        check_includes("bad.lua", "--@include deferred\nlocal deferred_count = 1\n")


def test_the_helpers_keys_are_written_out_as_the_key_names_of_the_table():
    code = "redis.call('HGET', keys.job(jid), 'x')  -- keys.job(jid) in a comment\n" \
           "local b = keys.throughput(int(math.floor(t / 10))) .. keys.rotation()\n"
    assert expand_keys(code) == (
        "redis.call('HGET', (KEYS[1] .. ':j:' .. jid), 'x')  -- keys.job(jid) in a comment\n"
        "local b = (KEYS[1] .. ':tp:' .. (int(math.floor(t / 10)))) .. (KEYS[1] .. ':rot')\n")
    with pytest.raises(ScriptError, match="no key named"):
        expand_keys("keys.nothing(uid)")
    finish = source("finish")
    helpers = re.sub(r"--[^\n]*", "", finish[:finish.index((LUA_DIR / "finish.lua").read_text())])
    assert "KEYS[1] .. ':j:' .. jid" in helpers
    assert not re.search(r"keys\.\w+\(", helpers), "helpers use the keys written out"


# ---- a finish of one job that claims at once: the lane it frees, held back ----

SAME_LANE_USERS = ("ann", "ann", "bob", "cy")  # ann alone in the rotation often


@hypothesis.settings(max_examples=60, deadline=None, database=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(
    jobs=st.lists(st.tuples(st.sampled_from(SAME_LANE_USERS), st.sampled_from(["", "a", "b"]),
                            st.sampled_from([-5, 0, 7]), st.integers(0, 2)),
                  min_size=1, max_size=16),
    outcomes=st.lists(st.booleans(), min_size=1, max_size=6),
    in_flight=st.integers(1, 2), wide=st.sampled_from([None, "ann"]))
@hypothesis.example(jobs=[("ann", "a", 7, 0), ("ann", "a", -5, 0), ("ann", "b", 0, 0)],
                    outcomes=[True], in_flight=1, wide=None)  # b's head ranks before a's next
def test_a_finish_that_claims_chooses_what_a_finish_then_a_claim_would(
        settings_factory, jobs, outcomes, in_flight, wide):
    """free_lane holds a freed lane back for the claim in the same script, which
    takes it without the startable lanes' round trip when nothing ranks before
    it: the same jobs, in the same order, as a finish and then a separate claim
    choose (users in turn, priorities and due times across keys, ties, retries,
    a user of concurrency 2)."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_same_choices(settings_factory, jobs, outcomes, in_flight, wide))
    finally:
        loop.close()


async def _same_choices(settings_factory, jobs, outcomes, in_flight, wide):
    prefix = f"t{uuid.uuid4().hex[:10]}"
    made = [settings_factory(queue_prefix=prefix + side, queue_shards=1, queue_max_attempts=2,
                             queue_retry_base_seconds=0) for side in "ab"]
    redis = connection.client(made[0].redis_url)
    try:
        one_call, two_calls = (Queue.from_settings(redis, s) for s in made)
        if wide:
            await one_call.set_limits(wide, concurrency=2)
        past = (await redis_ms(one_call) // 1000 - 3600) * 1000  # due a while ago: ties exact
        for i, (uid, key, priority, ago) in enumerate(jobs):
            await one_call.enqueue(uid, [NewJob(f"j{i}", "x", None, key, priority, past + ago)],
                                   100)
        held = (await one_call.claim(one_call.keys.base(0), in_flight, "w", 30)).jobs
        for step in itertools.count():
            if not held:
                break
            assert step < 4 * len(jobs), "every job ends"
            # both paths from the same state, each later than every due time in it (a
            # retry is due at once: its lane ranks by the time of the finish)
            await _copy_keys(redis, prefix + "a:", prefix + "b:")
            await asyncio.sleep(0.002)
            ok, lease = outcomes[step % len(outcomes)], held.pop(0)
            if step % 2:
                got = await one_call.finish(lease, ok, "r", claim_n=1, owner="w",
                                            lease_seconds=30)
                verdict = got.verdict
            else:
                got = await one_call.finish_many(one_call.keys.base(0), [Finish(lease, ok, "r")],
                                                 claim_n=1, owner="w", lease_seconds=30)
                [verdict] = got.verdicts
            alone = await two_calls.finish(lease, ok, "r", claim_n=0, owner="w",
                                           lease_seconds=30)
            then = await two_calls.claim(two_calls.keys.base(0), 1, "w", 30)
            assert (verdict, ids(got.jobs)) == (alone.verdict, ids(then.jobs)), step
            held += got.jobs
        for q in (one_call, two_calls):
            assert await q.is_idle()
            totals = await q.totals()
            assert (totals.queued, totals.processing, totals.users_waiting) == (0, 0, 0)
    finally:
        await redis.aclose()


async def _copy_keys(redis, source: str, target: str) -> None:
    """Every key under `target` replaced by a copy of the one under `source`."""
    gone = [k async for k in redis.scan_iter(match=target + "*")]
    if gone:
        await redis.delete(*gone)
    async for key in redis.scan_iter(match=source + "*"):
        await redis.copy(key, target + key[len(source):])
