"""The job timeout of async handlers (workers/deadlines.py): one timer for
every slot, and a timeout told apart from the worker's own cancel."""

from __future__ import annotations

import asyncio

import pytest

from workers.deadlines import Deadlines
from workers.runners import HandlerTimeout


async def _handler(seconds: float, result="done"):
    await asyncio.sleep(seconds)
    return result


async def test_a_handler_past_its_deadline_times_out_and_a_quick_one_does_not():
    deadlines = Deadlines(0.2)
    with pytest.raises(HandlerTimeout):
        await asyncio.wait_for(deadlines.run(_handler(30)), 10)
    assert await deadlines.run(_handler(0)) == "done"
    await asyncio.sleep(0.4)  # past where the quick one's deadline was: no stray cancel
    assert asyncio.current_task().cancelling() == 0


async def test_only_the_slots_past_their_deadline_are_cancelled():
    deadlines = Deadlines(0.3)

    async def slot(seconds):
        try:
            return await deadlines.run(_handler(seconds, seconds))
        except HandlerTimeout:
            return "timed out"

    results = await asyncio.wait_for(
        asyncio.gather(*(slot(s) for s in (0, 0.05, 30, 0.1, 30))), 10)
    assert results == [0, 0.05, "timed out", 0.1, "timed out"]


async def test_the_workers_own_cancel_passes_through_as_a_cancel():
    deadlines = Deadlines(30)
    task = asyncio.create_task(deadlines.run(_handler(30)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_from_the_worker_at_the_deadline_stays_a_cancel():
    """Both cancels land before the handler runs again: it blocks the loop past
    its deadline and past the worker's cancel, which are then both due."""
    import time

    deadlines = Deadlines(0.1)

    async def blocks_then_waits():
        time.sleep(0.3)
        await asyncio.sleep(30)

    task = asyncio.create_task(deadlines.run(blocks_then_waits()))
    asyncio.get_running_loop().call_later(0.05, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def test_a_handler_that_swallows_the_cancel_keeps_its_result_and_its_task_is_clean():
    deadlines = Deadlines(0.1)

    async def stubborn():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "kept going"

    assert await asyncio.wait_for(deadlines.run(stubborn()), 10) == "kept going"
    assert asyncio.current_task().cancelling() == 0
    await asyncio.sleep(0.2)  # nothing pending: the task is not cancelled later
