"""What the scripts' cost-cutting must not change (engine/scripts.py,
lua/_lib.lua: deferred writes, numbers written as text)."""

from __future__ import annotations

import re

import pytest

from engine.queue import Finish
from engine.scripts import LUA_DIR, ScriptError, check_returns, expand_keys, source
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
