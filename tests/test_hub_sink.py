"""The event hub's direct path: a caught-up listener gets events from the
reader through a sink; a sink that refuses hands the listener back to its
task, which catches up from the user's stream with no gap and no repeat."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from engine import connection
from engine.queue import Queue
from graph.live.events import EventHub
from tests.support import wait_until_async

OWNER = "test-hub-sink"


@pytest.fixture
async def hub(settings):
    redis = connection.client(settings.redis_url)
    blocking = connection.client(settings.redis_url, socket_timeout=None)
    hub = EventHub(Queue.from_settings(redis, settings), blocking)
    await hub.start()
    yield hub
    await hub.stop()
    await redis.aclose()
    await blocking.aclose()


async def finish_jobs(queue: Queue, uid: str, n: int) -> list[str]:
    """Enqueue n jobs for uid and finish them the way a worker does; their ids."""
    ids = [uuid.uuid4().hex for _ in range(n)]
    await queue.enqueue(uid, [(jid, f"data {jid}", None) for jid in ids], 10**6)
    batch = await queue.claim(queue.keys.user_base(uid), 1, OWNER, 30)
    while batch.jobs:
        batch = await queue.finish(batch.jobs[0], True, "done", claim_n=1, owner=OWNER,
                                   lease_seconds=30)
    return ids


class Sink:
    """Writes what it takes to `out`; refuses `refusals` events once `refuse_after`
    have gone out, as a connection with a full buffer would."""

    def __init__(self, out: list, refuse_after: int = 10**9, refusals: int = 0):
        self.out, self.taken = out, 0
        self.refuse_after, self.refusals = refuse_after, refusals

    def __call__(self, cursor, record) -> bool:
        if self.taken >= self.refuse_after and self.refusals > 0:
            self.refusals -= 1
            return False
        self.taken += 1
        self.out.append(record.id)
        return True


async def listen(hub, uid, sink, out, n, after="0"):
    """Listen as the fan-out does: what the generator yields goes out by the slow path."""
    async for _cursor, record in hub.listen(uid, after, sink=sink):
        out.append(record.id)
        if len(out) >= n:
            return
    raise AssertionError("the listener ended")


def sink_is_set(hub, uid) -> bool:
    return any(listener.sink is not None for listener in hub._listeners.get(uid, ()))


async def test_a_caught_up_listener_is_fed_by_the_sink(hub):
    uid, out = uuid.uuid4().hex, []
    sink = Sink(out)
    first = await finish_jobs(hub.queue, uid, 3)  # replayed by the generator
    task = asyncio.create_task(listen(hub, uid, sink, out, 23))
    await wait_until_async(lambda: sink_is_set(hub, uid), 10, message="the sink")
    later = await finish_jobs(hub.queue, uid, 20)
    await wait_until_async(lambda: len(out) >= 23 or task.done(), 30, message="23 events")
    task.cancel()
    assert out == first + later, "in finishing order, each once"
    assert sink.taken == 20, "every live event went through the sink"


async def test_a_refusing_sink_loses_nothing_and_repeats_nothing(hub):
    uid, out = uuid.uuid4().hex, []
    sink = Sink(out, refuse_after=5, refusals=3)
    task = asyncio.create_task(listen(hub, uid, sink, out, 60))
    await wait_until_async(lambda: sink_is_set(hub, uid), 10, message="the sink")
    ids = await finish_jobs(hub.queue, uid, 60)
    await wait_until_async(lambda: len(out) >= 60 or task.done(), 30, message="60 events")
    task.cancel()
    assert out == ids, "in finishing order, nothing lost, nothing twice"
    assert sink.refusals == 0, "all three refusals happened"
    assert 5 <= sink.taken < 60, "the task caught up after a refusal; the sink took the rest"
