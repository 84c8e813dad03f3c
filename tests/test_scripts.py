"""The scripts as Redis runs them (engine/scripts.py) and what they answer
(engine/replies.py): each includes what it calls, the engine's constants
come from Python, and every status reads as a value or an exception."""

from __future__ import annotations

import re
import uuid

import pytest

from engine import connection
from engine import queue as engine_queue
from engine.keys import Keys
from engine.queue import Finish, NotFinished, NotQueued, Queue, QueueFull, RetryPolicy
from engine.replies import REPLIES, UnknownReply, decode
from engine.scripts import CONSTANTS, LUA_DIR, NAMES, ScriptError, check_includes, source


@pytest.fixture
async def redis(settings):
    client = connection.client(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def constants(monkeypatch):
    """Change CONSTANTS for one test; scripts loaded from then on use them."""
    def change(**values):
        for name, value in values.items():
            monkeypatch.setitem(CONSTANTS, name, value)
        source.cache_clear()
    yield change
    source.cache_clear()


# ---- include lines ----


def test_each_script_gets_what_it_includes_once_each_before_its_use():
    finish = source("finish")
    for helper in ("place", "finish_terminal", "claim", "job_table"):
        assert finish.count(f"--@helper {helper}\n") == 1, helper
    assert finish.count("local keys = {") == 1
    assert finish.index("local function place(") < finish.index("local function finish_terminal(")
    assert finish.index("local keys = {") < finish.index("local function job_table(")
    claim = source("claim")
    assert "local function claim(" in claim and "finish_terminal" not in claim, \
        "a script gets only what it needs"
    assert "local keys" not in source("count")


def test_an_include_line_must_name_what_the_code_calls():
    with pytest.raises(ScriptError, match=r"calls \['touch'\] without including"):
        check_includes("bad.lua", "--@include keys\ntouch('u', keys.job('j'))\n")
    with pytest.raises(ScriptError, match=r"includes \['now_ms'\] it does not call"):
        check_includes("bad.lua", "--@include now_ms, touch\ntouch('u', 'j')\n")
    with pytest.raises(ScriptError, match="unknown helper"):
        check_includes("bad.lua", "--@include no_such_helper\n")
    assert check_includes("good.lua", "--@include touch\n-- now_ms() in a comment\ntouch('u', 'j')\n") \
        == ["touch"]


def test_every_script_loads():
    for name in NAMES:
        assert source(name).endswith((LUA_DIR / f"{name}.lua").read_text())


# ---- constants ----


def test_no_script_holds_a_bare_cap_or_batch_size():
    code = {p.name: re.sub(r"--[^\n]*", "", p.read_text()) for p in LUA_DIR.glob("*.lua")}
    for name, text in code.items():
        assert not re.search(r"\b(63|64|100|10000)\b", text), name
    for name, value in CONSTANTS.items():
        assert any(re.search(rf"\b{name}\b", text) for text in code.values()), f"{name} unused"
        assert all(f"local {name} = {value}\n" in source(script) for script in NAMES)


async def test_the_signal_cap_comes_from_python(redis, settings, constants):
    constants(SIGNAL_TOKENS=3)
    queue = Queue(redis, Keys(settings.queue_prefix))
    for _ in range(10):
        uid = uuid.uuid4().hex
        await queue.enqueue(uid, [(uid, "x", None)], 10)
    assert await redis.llen(Keys.signal(queue.keys.base(0))) == 3


async def test_the_reclaim_batch_comes_from_python(redis, settings, constants):
    constants(RECLAIM_BATCH=2)
    queue = Queue(redis, Keys(settings.queue_prefix))
    base = queue.keys.base(0)
    for _ in range(3):
        uid = uuid.uuid4().hex
        await queue.enqueue(uid, [(uid, "x", None)], 10)
    assert len((await queue.claim(base, 3, "w", lease_seconds=0)).jobs) == 3  # expired at once
    assert await queue.reclaim(base) == 2
    assert await queue.reclaim(base) == 1


# ---- replies ----


def test_every_script_has_its_replies_listed():
    assert set(REPLIES) == set(NAMES)


def test_an_unknown_status_is_a_clear_error():
    with pytest.raises(UnknownReply, match=r"'release' script answered status 'gone'.*ok, stale"):
        decode("release", ["gone"])
    with pytest.raises(UnknownReply, match="'claim' script answered status 1"):
        decode("claim", 1)  # a bare value: an old script's positional reply
    with pytest.raises(UnknownReply, match="no such script"):
        decode("nothing", ["ok"])


async def test_every_status_of_every_script_reads_as_a_value_or_an_exception(
        redis, settings, monkeypatch):
    seen: set[tuple[str, str]] = set()

    def recording(script, reply):
        seen.add((script, reply[0]))
        return decode(script, reply)

    monkeypatch.setattr(engine_queue, "decode", recording)
    queue = Queue(redis, Keys(settings.queue_prefix),
                  RetryPolicy(max_attempts=2, retry_base_seconds=0))
    ann = uuid.uuid4().hex
    base = queue.keys.user_base(ann)
    w = {"owner": "w", "lease_seconds": 30}

    placed = await queue.enqueue(ann, [(f"a{i}", str(i), None) for i in (1, 2, 3)], 3)
    assert [p.created for p in placed] == [True] * 3
    with pytest.raises(QueueFull) as full:
        await queue.enqueue(ann, [("a4", "4", None)], 3)
    assert full.value.index == 0
    assert await queue.dequeue(ann) is None
    assert await queue.cancel(ann, "no-such-job") is None

    [job] = (await queue.claim(base, 1, "w", 30)).jobs
    assert await queue.progress(job, 0.4, None) == "", "stored, nobody follows it"
    assert (await queue.watch(ann, job.job_id))[0].progress == 0.4
    assert await queue.watch(ann, "no-such-job") == (None, None)
    assert (await queue.progress(job, 0.5, "half")).count("-") == 1, "followed: a cursor"
    with pytest.raises(NotQueued) as conflict:
        await queue.cancel(ann, job.job_id)
    assert conflict.value.status == "PROCESSING"
    assert await queue.heartbeat([job], 30) == []

    done = await queue.finish(job, True, "r1", claim_n=1, **w)
    assert done.verdict == "completed"
    stale = await queue.finish(job, True, "again", claim_n=0, **w)
    assert (stale.verdict, stale.jobs) == ("stale", [])
    assert await queue.heartbeat([job], 30) == [job.member]
    assert await queue.progress(job, 1.0, None) is None, "stale: not recorded"

    retry = await queue.finish(done.jobs[0], False, "boom", claim_n=1, **w)
    assert retry.verdict == "retry"
    [again] = retry.jobs
    assert (again.job_id, again.attempts) == ("a2", 2)
    failed = await queue.finish(again, False, "boom", claim_n=1, **w)
    assert failed.verdict == "failed"
    [third] = failed.jobs
    many = await queue.finish_many(base, [Finish(job, True, "again")], claim_n=0, **w)
    assert (many.verdicts, many.jobs) == (["stale"], [])

    assert await queue.release(third) is True
    assert await queue.release(third) is False
    assert (await queue.cancel(ann, third.job_id)).status.value == "CANCELLED"
    assert (await queue.dequeue(ann)).id == "a1"

    await queue.enqueue(ann, [("a5", "5", None)], 3)
    await queue.claim(base, 1, "w", lease_seconds=0)
    assert await queue.reclaim(base) == 1
    assert await queue.mark_archived(base, await queue.archive_batch(base), 60, 60) is None
    assert await queue.count(queue.keys.login_throttle(ann, "here"), 60) == 1

    # the operators' scripts
    assert (await queue.set_limits(ann, paused=True)).paused is True
    with pytest.raises(NotFinished) as conflict:
        await queue.retry(ann, "a5")
    assert conflict.value.status == "QUEUED"
    assert await queue.retry(ann, "no-such-job") is None
    assert (await queue.retry(ann, "a2")).job.attempts == 0, "a FAILED job"
    assert await queue.purge(ann) == 2
    assert await queue.recount(base) == 0

    assert seen == {(script, status) for script, statuses in REPLIES.items()
                    for status in statuses}
