"""The benchmark's Redis time per job: scripts' time once, not again in their inner commands' rows."""

from __future__ import annotations

import pytest

from bench import redis_time

SCRIPT = "redis.call('hset', KEYS[1], 'a', ARGV[1]); redis.call('hset', KEYS[1], 'b', ARGV[1]); return 1"


def test_a_scripts_inner_commands_are_not_counted_twice(redis_sync_client):
    r = redis_sync_client
    sha = r.script_load(SCRIPT)
    r.rpush("bench-test:ready", *range(20))
    before = redis_time.reset(r)
    for i in range(20):  # a "job": one script plus one pop the client sends itself
        r.evalsha(sha, 1, f"bench-test:job:{i}", i)
        r.blpop(["bench-test:ready"], timeout=1)

    rt = redis_time.measure(r, 20, before)

    calls = {name: c for name, (c, _) in rt.rows.items()}
    assert calls["evalsha"] == 20 and calls["hset"] == 40 and calls["blpop"] == 20
    usec = {name: u for name, (_, u) in rt.rows.items()}
    # the HSETs are inside EVALSHA's time
    assert rt.per_job_us * 20 == pytest.approx(usec["evalsha"] + usec["blpop"])
    assert rt.per_job_us * 20 < sum(usec.values())
    assert rt.cpu_us > 0



def test_script_calls_add_up_every_kind_of_script_row():
    """A worker's calls are FCALLs on Redis 7 and EVALSHAs elsewhere: both count."""
    info = ("cmdstat_evalsha:calls=3,usec=90,usec_per_call=30.00\n"
            "cmdstat_fcall:calls=7,usec=210,usec_per_call=30.00\n"
            "cmdstat_hset:calls=20,usec=40,usec_per_call=2.00\n")
    assert redis_time.script_calls(info) == (10, 300)
