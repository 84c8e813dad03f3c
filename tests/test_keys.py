"""One table of key names (engine/keys.py): Python's methods and the Lua
scripts' `keys` functions are built from it, and the queue's own reads find
what the scripts wrote."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from engine import connection
from engine.keys import LAYOUT, Keys, fields, lua_keys
from engine.queue import Queue, Shape
from engine.scripts import LUA_DIR

SAMPLE = ["u1", "k2"]  # values for a key's fields after `base`, in order

# every function of the generated `keys` table, called with SAMPLE
LIST_LUA_KEYS = """
local out = {}
for name, key in pairs(keys) do
  out[#out + 1] = name
  out[#out + 1] = key(unpack(ARGV))
end
return out
"""


@pytest.fixture
async def queue(settings):
    redis = connection.client(settings.redis_url)
    yield Queue.from_settings(redis, settings)
    await redis.aclose()


def shard_key_names() -> set[str]:
    return {name for name in LAYOUT if fields(name)[0] == "base"}


def test_every_name_in_the_table_is_a_method_that_formats_its_template():
    keys = Keys("p")
    for name, template in LAYOUT.items():
        values = {f: f"<{f}>" for f in fields(name)}
        values["prefix"] = "p"
        args = [values[f] for f in fields(name) if f != "prefix"]
        assert getattr(keys, name)(*args) == template.format(**values), name


async def test_the_lua_keys_are_the_table_s_shard_keys_and_nothing_else(queue):
    base = queue.keys.base(0)
    reply = await queue.redis.eval(lua_keys() + LIST_LUA_KEYS, 1, base, *SAMPLE)
    in_lua = dict(zip(reply[::2], reply[1::2]))
    expected = {name: getattr(Keys, name)(base, *SAMPLE[:len(fields(name)) - 1])
                for name in shard_key_names()}
    assert in_lua == expected
    assert {"rotation", "pending", "job", "signal", "shard_events"} <= set(in_lua)
    assert not {"enqueue_rate", "login_throttle"} & set(in_lua), "counters are not shard keys"


def test_no_script_or_helper_builds_a_key_by_hand():
    for path in LUA_DIR.glob("*.lua"):
        code = re.sub(r"--[^\n]*", "", path.read_text())
        assert not re.search(r"\bbase\b", code), f"{path.name} builds a key from `base`"
        if path.name != "count.lua":  # its KEYS[1] is the whole counter key
            assert "KEYS[" not in code, f"{path.name} reads KEYS itself"


async def test_the_queue_reads_what_the_scripts_write(queue):
    uid = uuid.uuid4().hex
    base = queue.keys.user_base(uid)
    assert await queue.is_idle()
    assert await queue.head_wait() == 0.0
    assert await queue.last_shard_event(base) == "0-0"

    await queue.enqueue(uid, [(f"{uid}-1", "one", None), (f"{uid}-2", "two", None)], 10)
    assert await queue.shape() == Shape(in_rotation=1, delayed=0, running=0, archive_backlog=2)
    assert not await queue.is_idle()
    # the head job was created a minute ago
    await queue.redis.hset(Keys.job(base, f"{uid}-1"), "created", int((time.time() - 60) * 1000))
    assert 59 < await queue.head_wait() < 120

    # the enqueue woke the shard: one token, taken and put back
    keys = queue.signal_keys()
    assert Keys.signal(base) in keys
    assert await queue.wait_signal(keys, 1) == Keys.signal(base)
    await queue.return_signal(Keys.signal(base))
    assert await queue.wait_signal(keys, 1) == Keys.signal(base)

    job = (await queue.claim(base, 1, "w", 30)).jobs[0]
    assert (await queue.shape()).running == 1
    await queue.finish(job, True, "ONE", claim_n=0, owner="w", lease_seconds=30)
    [event] = await queue.read_shard_events(base, "0-0", count=10, block_ms=100)
    assert await queue.last_shard_event(base) == event.entry_id
    assert event.user_id == uid and '"result":"ONE"' in event.body
    assert await queue.has_event(uid, event.cursor)
    assert not await queue.has_event(uid, "1-0")
    assert await queue.read_shard_events(base, event.entry_id, count=10, block_ms=10) == []
    [(cursor, record)] = await queue.events_after(uid, "0-0")
    assert (cursor, record.id) == (event.cursor, job.job_id)


async def test_counters_start_their_window_at_the_first_count(queue):
    key = queue.keys.login_throttle(uuid.uuid4().hex, "127.0.0.1")
    assert [await queue.count(key, 60) for _ in range(3)] == [1, 2, 3]
    assert 0 < await queue.redis.ttl(key) <= 60
    assert await queue.count(key, 60, by=5) == 8
    await queue.clear_count(key)
    assert await queue.count(key, 60) == 1

    uid = uuid.uuid4().hex
    assert await queue.count_enqueues(uid, 3) == 3
    assert await queue.count_enqueues(uid, 2) == 5
    rate_key = queue.keys.enqueue_rate(uid, int(time.time() // 60))
    assert 0 < await queue.redis.ttl(rate_key) <= 120
